"""Metrics of relevance scores and of selective answering: ROC-AUC, calibration, risk-coverage.

Relevance scores are judged against the contains-answer label of each (question, passage) pair
(DPR's has_answer, `rearqa.eval.metrics.passages_with_answer`):

- ROC-AUC is the Mann-Whitney statistic P(s_pos > s_neg) + 0.5 P(s_pos = s_neg), so ties count
  half. "pooled" ranks all pairs of all questions together; "per question" averages the AUC of
  each question that has both a positive and a negative passage (how well a scorer orders one
  question's passages, which is what routing uses, free of between-question score offsets).
- Intervals resample QUESTIONS with replacement (a question's passages share its difficulty, so
  pairs are not independent). Each resample is a weight vector over questions, so the AUC of a
  resample is one weighted pass over the pairs sorted once, and every scorer sees the same
  resamples: differences between scorers get paired intervals.
- Calibration: equal-width bins of predicted probability; the reliability curve is (mean
  predicted probability, fraction positive) per bin, and ECE = sum_b n_b / N |frac_pos_b -
  mean_prob_b| (Guo et al., 2017). REAR's rank head is trained with a BCE loss, so its logit's
  sigmoid is a probability as it stands. Dense cosine and BM25 scores are not probabilities:
  they are mapped by a 1-D logistic fit (Platt, 1999, with his smoothed targets) on a dev split
  and the fitted map is applied to test, so their ECE measures the best a monotone sigmoid of
  the score can do, not the raw score.
- Risk-coverage (El-Yaniv and Wiener, 2010): answer the questions in order of decreasing
  confidence; at coverage c the risk is the error rate among the answered. AURC is the mean risk
  over coverages 1/n .. 1. Questions with equal confidence are answered together (the curve has
  a point only at the end of each tie group), so the result does not depend on their order.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rearqa.eval.report import new_figure, save_figure

Group = tuple[Sequence[float], Sequence[bool]]  # one question: passage scores, labels


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return s, y


# --- ROC-AUC -----------------------------------------------------------------------------------

class _RankedPairs:
    """Pairs sorted once by score, for the weighted Mann-Whitney AUC of many resamples."""

    def __init__(self, scores, labels) -> None:
        s, self.y = _arrays(scores, labels)
        _, self.tie_group = np.unique(s, return_inverse=True)  # ascending distinct values
        self.n_groups = int(self.tie_group.max()) + 1 if s.size else 0

    def auc(self, weights: np.ndarray | None = None) -> float:
        """sum_{pos, neg} w_p w_n ([s_p > s_n] + 0.5 [s_p = s_n]) / (W_pos W_neg)."""
        w = np.ones(self.y.size) if weights is None else weights
        pos = np.bincount(self.tie_group, w * self.y, self.n_groups)
        neg = np.bincount(self.tie_group, w * ~self.y, self.n_groups)
        below = np.cumsum(neg) - neg  # negative weight strictly below each distinct score
        denominator = pos.sum() * neg.sum()
        if denominator == 0:
            return float("nan")
        return float((pos * (below + 0.5 * neg)).sum() / denominator)


def roc_auc(scores, labels) -> float:
    """ROC-AUC with ties counted half (Mann-Whitney U / (n_pos n_neg)); needs both classes."""
    s, y = _arrays(scores, labels)
    if y.all() or not y.any():
        raise ValueError(f"ROC-AUC needs positive and negative labels; got {int(y.sum())} "
                         f"positive of {y.size}")
    return _RankedPairs(s, y).auc()


def per_question_auc(groups: Sequence[Group]) -> dict[str, Any]:
    """{"mean", "n_questions", "per_question"}: the AUC of each question with both classes
    (None for the others) and their mean."""
    values: list[float | None] = []
    for scores, labels in groups:
        y = np.asarray(labels, dtype=bool)
        values.append(roc_auc(scores, y) if y.any() and not y.all() else None)
    usable = [v for v in values if v is not None]
    return {"mean": float(np.mean(usable)) if usable else None, "n_questions": len(usable),
            "per_question": values}


def _question_resamples(n_questions: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_questions) multiplicity of each question in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    counts = np.empty((n_resamples, n_questions))
    for r in range(n_resamples):
        counts[r] = np.bincount(rng.integers(0, n_questions, n_questions), minlength=n_questions)
    return counts


def _interval(values: np.ndarray, ci: float) -> list[float]:
    tail = (1.0 - ci) / 2.0
    values = values[np.isfinite(values)]
    return [float(v) for v in np.quantile(values, [tail, 1.0 - tail])] if values.size else [None, None]


def auc_comparison(groups_by_scorer: dict[str, Sequence[Group]], n_resamples: int = 1000,
                   seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """Pooled and per-question AUC of several scorers on the SAME questions and pairs, with
    question-bootstrap intervals, and paired differences of each scorer from the first one.

    Returns {"scorers": {name: {"pooled": {value, low, high}, "per_question": {value, low,
    high, n_questions, per_question}}}, "differences": {name: {"pooled": {diff, low, high, of},
    "per_question": {...}}}, "n_questions", "n_pairs", "n_positive", "n_resamples", "seed", "ci"}.
    """
    names = list(groups_by_scorer)
    if not names:
        raise ValueError("give at least one scorer")
    first = groups_by_scorer[names[0]]
    for name in names[1:]:
        other = groups_by_scorer[name]
        if len(other) != len(first) or any(
                list(map(bool, a[1])) != list(map(bool, b[1])) for a, b in zip(first, other)):
            raise ValueError(f"scorer {name!r} does not score the same pairs as {names[0]!r}")
    sizes = np.array([len(labels) for _, labels in first], dtype=int)
    question_of_pair = np.repeat(np.arange(len(first)), sizes)
    counts = _question_resamples(len(first), n_resamples, seed)  # shared by all scorers
    samples: dict[str, dict[str, np.ndarray]] = {}
    result: dict[str, Any] = {"scorers": {}, "differences": {}}
    for name in names:
        groups = groups_by_scorer[name]
        ranked = _RankedPairs(np.concatenate([np.asarray(s, float) for s, _ in groups]),
                              np.concatenate([np.asarray(y, bool) for _, y in groups]))
        per_q = per_question_auc(groups)
        auc_q = np.array([np.nan if v is None else v for v in per_q["per_question"]])
        valid = np.isfinite(auc_q)
        weight = counts[:, valid].sum(axis=1)
        samples[name] = {
            "pooled": np.array([ranked.auc(c[question_of_pair]) for c in counts]),
            "per_question": np.where(weight > 0, counts[:, valid] @ auc_q[valid] / np.maximum(weight, 1),
                                     np.nan)}
        pooled = ranked.auc()
        result["scorers"][name] = {
            "pooled": {"value": pooled if np.isfinite(pooled) else None},  # None: one class only
            "per_question": {"value": per_q["mean"], "n_questions": per_q["n_questions"],
                             "per_question": per_q["per_question"]}}
        for kind in ("pooled", "per_question"):
            low, high = _interval(samples[name][kind], ci)
            result["scorers"][name][kind].update(low=low, high=high)
    base = names[0]
    for name in names[1:]:
        result["differences"][name] = {}
        for kind in ("pooled", "per_question"):
            a, b = result["scorers"][name][kind]["value"], result["scorers"][base][kind]["value"]
            low, high = _interval(samples[name][kind] - samples[base][kind], ci)
            result["differences"][name][kind] = {
                "diff": None if a is None or b is None else float(a - b), "low": low, "high": high,
                "of": f"{name} - {base}"}
    n_positive = int(sum(np.asarray(y, bool).sum() for _, y in first))
    result.update(n_questions=len(first), n_pairs=int(sizes.sum()), n_positive=n_positive,
                  n_resamples=n_resamples, seed=seed, ci=ci)
    return result


# --- calibration -------------------------------------------------------------------------------

def sigmoid(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def fit_platt(scores, labels, iterations: int = 100) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a * score + b) by Newton's method on the log loss, with Platt's
    smoothed targets (n_pos + 1) / (n_pos + 2) and 1 / (n_neg + 2), which keep a separable
    dev set from driving a to infinity."""
    s, y = _arrays(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"Platt scaling needs both classes; got {n_pos} positive, {n_neg} negative")
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    scale = s.std() or 1.0  # fit on standardised scores for a well-conditioned Hessian
    z = (s - s.mean()) / scale
    x = np.stack([z, np.ones_like(z)], axis=1)  # (N, 2)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = sigmoid(x @ theta)
        gradient = x.T @ (p - target)
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    a = theta[0] / scale
    return float(a), float(theta[1] - a * s.mean())


def platt_probs(scores, ab: tuple[float, float]) -> np.ndarray:
    return sigmoid(ab[0] * np.asarray(scores, dtype=np.float64) + ab[1])


def reliability_bins(probs, labels, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins on [0, 1] (the last one closed): {low, high, n, mean_prob, frac_pos}
    for each non-empty bin."""
    p, y = _arrays(probs, labels)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]; map scores with sigmoid or fit_platt first")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r}: must be a positive integer")
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = index == b
        if inside.any():
            bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "n": int(inside.sum()),
                         "mean_prob": float(p[inside].mean()), "frac_pos": float(y[inside].mean())})
    return bins


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE = sum over bins of n_b / N * |fraction positive - mean predicted probability|."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(b["n"] for b in bins)
    if total == 0:
        raise ValueError("no predictions to calibrate")
    return float(sum(b["n"] / total * abs(b["frac_pos"] - b["mean_prob"]) for b in bins))


# --- selective answering -----------------------------------------------------------------------

def risk_coverage(confidences, correct) -> dict[str, Any]:
    """{"coverage", "risk", "aurc", "risk_at_full_coverage", "n"}: answering the most confident
    questions first; one point per tie group of confidence (see the module docstring)."""
    c, ok = _arrays(confidences, np.asarray(correct, dtype=float) > 0.5)
    n = c.size
    if n == 0:
        raise ValueError("risk_coverage needs at least one question")
    order = np.argsort(-c, kind="stable")
    c, errors = c[order], (~ok[order]).astype(float)
    group_end = np.flatnonzero(np.append(c[1:] != c[:-1], True))  # last index of each tie group
    answered = group_end + 1
    risk = np.cumsum(errors)[group_end] / answered
    sizes = np.diff(np.concatenate([[0], answered]))
    return {"coverage": (answered / n).tolist(), "risk": risk.tolist(),
            "aurc": float((sizes * risk).sum() / n), "risk_at_full_coverage": float(risk[-1]),
            "n": int(n)}


# --- plots -------------------------------------------------------------------------------------

def _save_unit_square(figure, axes, path: str | Path, title: str) -> Path:
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    return save_figure(figure, axes, path, title)


def plot_reliability(curves: dict[str, dict[str, Any]], path: str | Path, title: str) -> Path:
    """Reliability diagram: per scorer {"bins": reliability_bins(...), "ece": float}."""
    figure, axes = new_figure(6, 4.5)
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, curve in curves.items():
        bins = curve["bins"]
        axes.plot([b["mean_prob"] for b in bins], [b["frac_pos"] for b in bins], marker="o",
                  markersize=3, label=f"{name} (ECE {curve['ece']:.3f})")
    axes.set_xlabel("predicted probability of containing the answer")
    axes.set_ylabel("fraction of passages containing the answer")
    return _save_unit_square(figure, axes, path, title)


def plot_risk_coverage(curves: dict[str, dict[str, Any]], path: str | Path, title: str) -> Path:
    """Risk-coverage curves: per curve a `risk_coverage(...)` result."""
    figure, axes = new_figure(6, 4.5)
    for name, curve in curves.items():
        axes.step(curve["coverage"], curve["risk"], where="post",
                  label=f"{name} (AURC {curve['aurc']:.3f})")
    axes.set_xlabel("coverage (share of questions answered)")
    axes.set_ylabel("risk (error rate among answered)")
    return _save_unit_square(figure, axes, path, title)


# --- the rank-head report ----------------------------------------------------------------------

def _drop_per_question(data: Any) -> Any:
    """The metrics without per-question lists, for the markdown (report.json keeps them)."""
    if isinstance(data, dict):
        return {k: _drop_per_question(v) for k, v in data.items() if k != "per_question" or
                not isinstance(v, list)}
    return data


def rank_metrics_markdown(metrics: dict[str, Any]) -> str:
    """The tables of a rank-head metrics result (see `write_rank_metrics`)."""
    def ci(d):
        value = d.get("value", d.get("diff"))
        if value is None or value != value:  # None or NaN: a group with one class only
            return "-"
        return f"{value:.3f}" + ("" if d["low"] is None else f" [{d['low']:.3f}, {d['high']:.3f}]")

    lines = [f"# Rank-head metrics: {metrics['split']}, top-{metrics['k']} {metrics['retriever']} "
             "passages, label = passage contains a gold answer", "",
             f"Dense/BM25 probabilities: Platt maps {metrics['platt']['note']}; REAR: {rear_probability(metrics)}.", ""]
    for group, g in metrics["groups"].items():
        auc = g["auc"]
        imputed = ", ".join(f"{name} {share:.1%}" for name, share in g["imputed_share"].items())
        lines += [f"## {group} questions ({auc['n_questions']} questions, {auc['n_pairs']} pairs, "
                  f"{auc['n_positive']} positive; scores imputed below the listed minimum: {imputed})", "",
                  "| scorer | pooled AUC [95% CI] | per-question AUC [95% CI] (n) | ECE |",
                  "|---|---|---|---|"]
        for name, s in auc["scorers"].items():
            ece = g["calibration"].get(name, {}).get("ece")
            lines.append(f"| {name} | {ci(s['pooled'])} | {ci(s['per_question'])} "
                         f"({s['per_question']['n_questions']}) | {'-' if ece is None else f'{ece:.3f}'} |")
        for name, d in auc["differences"].items():
            lines.append(f"| {d['pooled']['of']} | {ci(d['pooled'])} | {ci(d['per_question'])} | |")
        lines.append("")
    lines += ["## Risk-coverage (EM, all questions)", "",
              "| answers ranked by | AURC | risk at full coverage |", "|---|---|---|"]
    lines += [f"| {name} | {c['aurc']:.3f} | {c['risk_at_full_coverage']:.3f} |"
              for name, c in metrics["risk_coverage"].items()]
    return "\n".join(lines) + "\n"


def rear_probability(metrics: dict[str, Any]) -> str:
    """How REAR's relevance became a probability in these metrics (its calibration curves say)."""
    hows = {c["probability"] for g in metrics["groups"].values()
            for name, c in g["calibration"].items() if name.startswith("REAR")}
    return "; ".join(sorted(hows)) or "no probability"


def write_rank_metrics(metrics: dict[str, Any], out: Path) -> None:
    """rank_metrics.json (everything), rank_metrics.md, reliability.png, risk_coverage.png for
    the result of `rearqa.eval.rear_rank_head.rank_head_metrics`."""
    from rearqa.eval.report import write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out / "rank_metrics.json")
    (out / "rank_metrics.md").write_text(rank_metrics_markdown(_drop_per_question(metrics)))
    group = "other" if "other" in metrics["groups"] else next(iter(metrics["groups"]))
    plot_reliability(metrics["groups"][group]["calibration"], out / "reliability.png",
                     f"{metrics['split']} ({group} questions): reliability of relevance scores")
    plot_risk_coverage(metrics["risk_coverage"], out / "risk_coverage.png",
                       f"{metrics['split']}: risk-coverage (EM)")
