"""Aggregates and writers for evaluation reports: report.json, report.md, recall_at_k.png.

A report keeps every per-question row next to the aggregates, so a number in the table can be
traced to the questions behind it. Aggregates are given overall, by answer type (numeric/date vs
other) and, when the run covers all questions, over the "answerable" part, because with the small
bundled corpus many "answerable" matches are spurious numbers and years.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rearqa.eval.bootstrap import bootstrap_ci
from rearqa.eval.metrics import DEFAULT_METRICS
from rearqa.files import atomic_write_text

ANSWER_METRICS = DEFAULT_METRICS  # the metrics every run scores (score_predictions' default)
CI_METRICS = ("em", "f1", "contained")  # metrics whose means get a 95% bootstrap interval
CI_RESAMPLES = 2000  # enough for a two-decimal interval on a report table


def row_value(row: dict[str, Any], metric: str) -> float:
    """A per-question metric from a row: "em", "f1", ... or "recall@K"."""
    if metric.startswith("recall@"):
        return float(row["recall"][metric.removeprefix("recall@")])
    return float(row[metric])


def row_groups(rows: Sequence[dict[str, Any]], answerable_groups: bool = True,
               ) -> dict[str, list[dict[str, Any]]]:
    """Named non-empty groups of rows: all, by answer type, and (when `answerable_groups` and
    the rows know it) the answerable part, also by answer type."""
    groups: dict[str, list[dict[str, Any]]] = {"all": list(rows)}
    for kind in ("numeric", "other"):
        groups[kind] = [r for r in rows if r["answer_type"] == kind]
    if answerable_groups and any(r.get("answerable") is not None for r in rows):
        answerable = [r for r in rows if r.get("answerable")]
        groups["answerable"] = answerable
        for kind in ("numeric", "other"):
            groups[f"answerable {kind}"] = [r for r in answerable if r["answer_type"] == kind]
    return {name: group for name, group in groups.items() if group}


def summarize(rows: Sequence[dict[str, Any]], recall_ks: Sequence[int], seed: int = 0,
              ) -> dict[str, Any]:
    """Means of the answer metrics, answer-recall@k and seconds per question over `rows`."""
    n = len(rows)
    summary: dict[str, Any] = {"n": n}
    for metric in (*ANSWER_METRICS, *(f"recall@{k}" for k in recall_ks)):
        summary[metric] = sum(row_value(r, metric) for r in rows) / n
    summary["seconds_per_question"] = sum(r["seconds"] for r in rows) / n
    summary["ci95"] = {}
    for metric in CI_METRICS:
        ci = bootstrap_ci([row_value(r, metric) for r in rows], CI_RESAMPLES, seed)
        summary["ci95"][metric] = [ci["low"], ci["high"]]
    return summary


def aggregate_rows(rows: Sequence[dict[str, Any]], recall_ks: Sequence[int], seed: int = 0,
                   answerable_groups: bool = True) -> dict[str, dict[str, Any]]:
    """`summarize` for each group of `row_groups`."""
    groups = row_groups(rows, answerable_groups)
    return {name: summarize(group, recall_ks, seed) for name, group in groups.items()}


def recall_curve(rows: Sequence[dict[str, Any]], max_k: int) -> list[float]:
    """answer-recall@k for k = 1..max_k, from each row's rank of its first answer passage."""
    ranks = [r["first_hit_rank"] for r in rows]
    return [sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)
            for k in range(1, max_k + 1)]


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Write JSON atomically, so a crash never leaves half a report."""
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]
    return lines


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def report_markdown(report: dict[str, Any], n_example_rows: int = 10) -> str:
    """The report's aggregates as markdown tables, plus the first few per-question rows."""
    settings, ks = report["settings"], report["settings"]["recall_ks"]
    header = ["group", "n", "EM", "F1", "contained", "length (words)",
              *(f"R@{k}" for k in ks), "s/question"]
    body = [[name, s["n"], s["em"], s["f1"], s["contained"], s["length"],
             *(s[f"recall@{k}"] for k in ks), f"{s['seconds_per_question']:.3g}"]
            for name, s in report["aggregate"].items()]
    ci_body = [[name, *(f"[{s['ci95'][m][0]:.3f}, {s['ci95'][m][1]:.3f}]" for m in CI_METRICS)]
               for name, s in report["aggregate"].items()]
    lines = [f"# Evaluation: {settings['dataset']} ({settings['subset']}), method "
             f"{settings['method']}, retriever {settings['retriever']}, k={settings['k']}", "",
             f"git commit `{report['git_commit'] or 'unknown (no git checkout or no commit)'}`"
             f"{' (uncommitted changes)' if report['git_dirty'] else ''}, seed {report['seed']}, "
             f"{report['n_rows']} questions ({'complete' if report['complete'] else 'INCOMPLETE'}).",
             "", *_table(header, body), "",
             "95% bootstrap intervals of the means:", "", *_table(["group", *CI_METRICS], ci_body),
             "", "Groups: `numeric` = every gold answer is a number or date "
             "(`rearqa.normalize.answer_type`); `answerable` = a normalised gold answer occurs "
             "as whole words in some corpus passage. Many such matches are spurious (a bare year "
             "in an unrelated article): check the per-question rows in report.json.", ""]
    cost = report.get("backbone_cost")
    if cost:
        evidence = cost["evidence"]
        lines += [f"Backbone {report.get('backbone', '')}: against the unpruned reader, attention "
                  f"FLOPs x{_fmt(cost['prefill_attention_flops_ratio'])} (prefill) / "
                  f"x{_fmt(cost['decode_attention_flops_ratio'])} (decode), "
                  f"x{_fmt(cost.get('question_attention_flops_ratio'))} (a whole question), decode KV bytes "
                  f"x{_fmt(cost['decode_kv_bytes_ratio'])}, total FLOPs "
                  f"x{_fmt(cost['prefill_total_flops_ratio'])} / x{_fmt(cost['decode_total_flops_ratio'])}; "
                  f"{_fmt(cost['pruned_prompt_token_share'])} of prompt tokens pruned, "
                  f"{_fmt(evidence['share'])} of the gold-answer tokens in the given passages "
                  f"({evidence['answer_tokens']} tokens, {evidence['questions_with_evidence']} "
                  "questions). Masked, not evicted: FLOPs and bytes are what eviction would spend.", ""]
    if report.get("load_errors"):
        lines += [f"{len(report['load_errors'])} bad line(s) in the question file were skipped:",
                  "", *(f"- {e}" for e in report["load_errors"][:20]), ""]
    rows = report["rows"][:n_example_rows]
    if rows:
        lines += [f"First {len(rows)} questions:", "", *_table(
            ["id", "question", "gold", "prediction", "EM", "contained", "first answer rank"],
            [[_cell(r["id"], 30), _cell(r["question"]), _cell(" / ".join(r["answers"]), 40),
              _cell(r["prediction"]), r["em"], r["contained"], r["first_hit_rank"]]
             for r in rows]), ""]
    return "\n".join(lines)


def new_figure(width: float = 6, height: float = 4):
    """A figure and its one axes on the object-oriented Agg canvas: no pyplot global state, no
    display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def save_figure(figure, axes, path: str | Path, title: str) -> Path:
    """Title, grid and legend, then write the figure to `path`."""
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def plot_recall_at_k(curves: dict[str, list[float]], path: Path, title: str) -> Path:
    """Line plot of answer-recall@k against k = 1..len(curve), one line per group."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = new_figure()
    for label, curve in curves.items():
        axes.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("k (passages retrieved)")
    axes.set_ylabel("answer-recall@k")
    axes.set_ylim(0.0, 1.0)
    return save_figure(figure, axes, path, title)


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and recall_at_k.png for an evaluation report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(report, out_dir / "report.json"),
             "md": out_dir / "report.md", "png": out_dir / "recall_at_k.png"}
    paths["md"].write_text(report_markdown(report), encoding="utf-8")
    groups = row_groups(report["rows"], answerable_groups="answerable" in report["aggregate"])
    curves = {f"{name} (n={len(groups[name])})": recall_curve(groups[name], report["depth"])
              for name in ("all", "answerable", "numeric", "other") if name in groups}
    settings = report["settings"]
    plot_recall_at_k(curves, paths["png"], f"{settings['dataset']} ({settings['subset']}), "
                                           f"retriever {settings['retriever']}")
    return paths


def comparison_markdown(result: dict[str, Any]) -> str:
    """A comparison's paired differences as markdown tables, one per compared pair."""
    lines = ["# Paired comparison", "",
             f"{result['n_shared']} questions shared by all reports; dropped per report: "
             + ", ".join(f"{d['report']}: {d['dropped']}" for d in result["reports"]) + ".",
             f"Differences are candidate - baseline, with {int(result['ci'] * 100)}% paired "
             f"bootstrap intervals ({result['n_resamples']} resamples, seed {result['seed']}); "
             "p = share of resamples with difference <= 0.", ""]
    for pair in result["pairs"]:
        lines += [f"## {pair['candidate']} vs baseline {pair['baseline']}", ""]
        body = [[group, metric, s["n"], s["mean_a"], s["mean_b"], s["diff"],
                 f"[{s['low']:.3f}, {s['high']:.3f}]", s["p_value"]]
                for group, by_metric in pair["groups"].items() for metric, s in by_metric.items()]
        lines += _table(["group", "metric", "n", "baseline", "candidate", "diff", "CI", "p"], body)
        lines.append("")
    return "\n".join(lines)
