"""Answer metrics for open-domain QA, as in SQuAD's evaluator and DPR's retrieval evaluation.

Every answer metric takes a prediction and the list of gold answers and returns one float; the
score of a prediction is its best match over the gold answers (SQuAD style). `score_predictions`
returns both the aggregate (the mean of each metric) and the per-example values, so any number in
a report can be traced to the examples behind it.

- exact match: normalised prediction == some normalised answer;
- token F1: SQuAD's bag-of-tokens F1 between normalised prediction and answer;
- answer contained: some normalised answer occurs as a run of whole tokens in the normalised
  prediction (a lenient accuracy for readers that answer in sentences);
- answer length: words in the prediction as written (whitespace split);
- answer-recall@k (retrieval): some of the top-k passages contains an answer (DPR's has_answer).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from rearqa.normalize import contains_answer, normalize_tokens
from rearqa.registry import resolve

AnswerMetric = Callable[[str, Sequence[str]], float]


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str) or not answers:
        raise ValueError(f"answers={answers!r}: expected a non-empty list of gold answer strings")


def exact_match(pred: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    _check_answers(answers)
    pred_tokens = normalize_tokens(pred)
    return float(any(pred_tokens == normalize_tokens(a) for a in answers))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    # SQuAD v2 convention: if either side normalises to nothing, F1 is 1 only when both do.
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, answers: Sequence[str]) -> float:
    """SQuAD token F1 of the prediction against its best-matching gold answer."""
    _check_answers(answers)
    pred_tokens = normalize_tokens(pred)
    return max(_f1(pred_tokens, normalize_tokens(a)) for a in answers)


def answer_contained(pred: str, answers: Sequence[str]) -> float:
    """1.0 when some normalised answer occurs as whole tokens in the normalised prediction."""
    _check_answers(answers)
    return float(contains_answer(pred, list(answers)))


def answer_length(pred: str) -> int:
    """Words in the prediction as written (whitespace split)."""
    return len(pred.split())


def passages_with_answer(passage_texts: Sequence[str], answers: Sequence[str]) -> list[bool]:
    """For each passage (in rank order): does it contain some normalised gold answer?"""
    _check_answers(answers)
    return [contains_answer(text, list(answers)) for text in passage_texts]


def recall_from_hits(hits: Sequence[bool], ks: Sequence[int]) -> dict[int, float]:
    """answer-recall@k for each k from the per-rank hit flags of one question."""
    return {k: float(any(hits[:k])) for k in ks}


def answer_recall_at_k(passage_texts: Sequence[str], answers: Sequence[str],
                       ks: Sequence[int]) -> dict[int, float]:
    """For each k: 1.0 when some of the top-k passages contains a gold answer, else 0.0.

    With fewer than k passages, the passages there are are the top k.
    """
    bad = [k for k in ks if not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"ks={list(ks)!r}: every k must be a positive integer, e.g. (1, 5, 20)")
    return recall_from_hits(passages_with_answer(passage_texts, answers), ks)


def answer_length_metric(pred: str, answers: Sequence[str]) -> float:
    """`answer_length` as an answer metric (the gold answers are not needed)."""
    return float(answer_length(pred))


# Registry of answer metrics (STYLE rule 3): name -> "module:function" of f(pred, answers) -> float.
# Names are the keys used in per-example rows, aggregates and comparisons; the dict is in
# alphabetical order, which is the order an unknown name's error lists them in.
METRICS: dict[str, str] = {
    "contained": "rearqa.eval.metrics:answer_contained",
    "em": "rearqa.eval.metrics:exact_match",
    "f1": "rearqa.eval.metrics:token_f1",
    "length": "rearqa.eval.metrics:answer_length_metric",
}
DEFAULT_METRICS = ("em", "f1", "contained", "length")


def get_metric(name: str) -> AnswerMetric:
    """The answer metric registered under `name`; an unknown name lists the valid ones."""
    return resolve(METRICS, name, "metric", error=ValueError)


def score_predictions(preds: Sequence[str], golds: Sequence[Sequence[str]],
                      metrics: Sequence[str] = DEFAULT_METRICS,
                      ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Score predictions against gold answer lists.

    Returns (aggregate, per_example): aggregate maps each metric name to its mean over the
    examples, plus "n"; per_example holds one {metric: value} dict per prediction, in order.
    """
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions but {len(golds)} gold answer lists: "
                         "pass one gold list per prediction")
    functions = {name: get_metric(name) for name in metrics}
    per_example = [{name: fn(pred, gold) for name, fn in functions.items()}
                   for pred, gold in zip(preds, golds)]
    aggregate: dict[str, float] = {"n": len(per_example)}
    for name in functions:
        values = [row[name] for row in per_example]
        aggregate[name] = sum(values) / len(values) if values else float("nan")
    return aggregate, per_example
