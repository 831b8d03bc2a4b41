"""Choosing REAR's final answer from per-passage scores, answers and confidences.

REAR answers the question once per passage (conditioned on the judgment the rank head made) and
then picks one answer:

    path_reliability        the answer of the passage with the highest relevance logit s_i
    knowledge_consistency   argmax_i s_i + gamma * con_i over passages with s_i > threshold, where
                            con_i = exp(-mean token CE of the whole answer a_i) when it is
                            re-scored after "{d_i}<BEGIN_QUERY>{q}<GENERATE_SCORE><IRRELEVANT>"

An answer the model still gives when told its passage is irrelevant comes from its own knowledge,
so a high con_i is evidence the answer is right. REAR's code used threshold 13 and gamma 9 on its
Llama-2 logit scale and scored only the first character of each answer (a bug); here the whole
answer is scored, and threshold and gamma are settings stored with each checkpoint (tune the
threshold on dev-select with `choose_threshold`).

When no passage clears the threshold the fallback decides: "closed_book" (the caller answers from
the model's own knowledge), "abstain", or "best_passage" (the argmax answer anyway, as REAR's
path-reliability does). Ties go to the earlier passage, i.e. the better retrieval rank.

Everything here is pure logic on score tables except `token_logprobs`/`answer_confidence`, which
turn a forward pass into con_i.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from rearqa.reader.rear.config import THRESHOLD_OBJECTIVES, RoutingConfig

@dataclass
class RoutingDecision:
    """The routing outcome for one question."""

    index: int | None  # chosen passage; None for closed_book / abstain
    mode: str  # "passage" | "closed_book" | "abstain"
    judgments: list[str]  # per passage: "relevant" if s_i > threshold else "irrelevant"
    answer: str | None = None  # answers[index] when answers were given and a passage was chosen
    method: str = ""  # routing method that decided
    combined: list[float | None] = field(default_factory=list)  # per-passage s_i + gamma*con_i (KC)


def _check_scores(scores) -> list[float]:
    values = [float(s) for s in scores]
    bad = [i for i, s in enumerate(values) if not math.isfinite(s)]
    if bad:
        raise ValueError(f"relevance scores at {bad} are not finite: {[values[i] for i in bad]}")
    return values


def _argmax_first(values: list[float], candidates: list[int]) -> int:
    """The candidate with the largest value; ties go to the earliest index."""
    return max(candidates, key=lambda i: (values[i], -i))


def route(scores, answers: list[str] | None = None, confidences=None,
          config: RoutingConfig | None = None) -> RoutingDecision:
    """Choose the final answer for one question.

    scores: per-passage relevance logits s_i. answers: per-passage answers a_i (optional; only
    copied into the decision). confidences: per-passage con_i in [0, 1]; required for
    knowledge_consistency on every passage above the threshold (others may be None).
    """
    config = config or RoutingConfig()
    s = _check_scores(scores)
    if answers is not None and len(answers) != len(s):
        raise ValueError(f"{len(answers)} answers for {len(s)} scores")
    judgments = ["relevant" if x > config.threshold else "irrelevant" for x in s]
    relevant = [i for i, j in enumerate(judgments) if j == "relevant"]

    def decide(index: int | None, mode: str, combined: list | None = None) -> RoutingDecision:
        answer = answers[index] if (answers is not None and index is not None) else None
        return RoutingDecision(index, mode, judgments, answer, config.method, combined or [])

    if not relevant:
        if config.fallback == "best_passage" and s:
            return decide(_argmax_first(s, list(range(len(s)))), "passage")
        return decide(None, "abstain" if config.fallback == "abstain" else "closed_book")
    if config.method == "path_reliability":
        return decide(_argmax_first(s, relevant), "passage")
    if confidences is None or len(confidences) != len(s):
        raise ValueError("knowledge_consistency needs one confidence per passage (None allowed "
                         "below the threshold); compute them with answer_confidence()")
    combined: list[float | None] = [None] * len(s)
    for i in relevant:
        if confidences[i] is None or not math.isfinite(float(confidences[i])):
            raise ValueError(f"passage {i} is above the threshold but its confidence is "
                             f"{confidences[i]!r}")
        combined[i] = s[i] + config.gamma * float(confidences[i])
    return decide(_argmax_first(combined, relevant), "passage", combined)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) ids -> (B, T) log p(ids[t] | ids[<t]); position 0 gets 0.

    Aligned with `RearInput.label_mask` (unshifted), so `answer_confidence(lp, label_mask)`.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return torch.cat([picked.new_zeros(picked.shape[0], 1), picked], dim=1)


def answer_confidence(logprobs: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """con = exp(mean log-prob over the answer tokens) = exp(-mean CE), (B,); empty answer -> 0."""
    mask = answer_mask.to(logprobs.dtype)
    count = mask.sum(dim=-1)
    # where(), not a product: masked positions may hold -inf (suppressed control tokens).
    picked = torch.where(answer_mask.bool(), logprobs, torch.zeros_like(logprobs))
    mean = picked.sum(dim=-1) / count.clamp(min=1)
    return torch.where(count > 0, mean.exp(), torch.zeros_like(mean))


@dataclass
class ThresholdChoice:
    """A dev-selected threshold and the objective value it reached."""

    threshold: float
    value: float
    objective: str


def choose_threshold(scores, labels, objective: str = "f1",
                     pos_threshold: float = 0.5) -> ThresholdChoice:
    """The threshold t (judge relevant when s > t) that maximises `objective` on a dev set.

    objective: "f1" = F1 of the relevant class (the default: relevant passages are the minority
    and what routing acts on), "accuracy", or "balanced_accuracy" (mean of the two recalls).
    labels: bools or graded labels; label >= pos_threshold counts as relevant. Candidates are the
    midpoints between consecutive distinct scores, plus min-1 (all relevant) and max (none);
    among equal values the lowest threshold wins.
    """
    if objective not in THRESHOLD_OBJECTIVES:
        raise ValueError(f"objective={objective!r}: choose one of {list(THRESHOLD_OBJECTIVES)}")
    s = np.asarray(_check_scores(scores), dtype=np.float64)
    y = np.asarray([float(v) for v in labels]) >= pos_threshold
    if len(s) == 0 or len(s) != len(y):
        raise ValueError(f"need as many labels as scores, at least one: got {len(s)} scores, "
                         f"{len(y)} labels")
    if objective != "accuracy" and (not y.any() or (objective == "balanced_accuracy" and y.all())):
        raise ValueError(f"objective {objective!r} needs both relevant and irrelevant labels")
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1]]])
    pred = s[None, :] > candidates[:, None]  # (C, N)
    tp = (pred & y).sum(1)
    fp = (pred & ~y).sum(1)
    fn = (~pred & y).sum(1)
    tn = (~pred & ~y).sum(1)
    if objective == "f1":
        value = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    elif objective == "accuracy":
        value = (tp + tn) / len(s)
    else:
        value = 0.5 * (tp / max(y.sum(), 1) + tn / max((~y).sum(), 1))
    best = int(np.argmax(value))  # first maximum = lowest threshold
    return ThresholdChoice(float(candidates[best]), float(value[best]), objective)
