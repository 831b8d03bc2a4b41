"""Does SpAtten prune the evidence? The share of gold-answer tokens inside answer-bearing passages
that the cascade pruned, and at which layer.

A RAG prompt holds the passages; a passage that contains a gold answer string (case-insensitive,
on word boundaries) is answer-bearing, and the prompt tokens whose characters overlap such an
occurrence are the evidence tokens. `SpAttenStats.pruned_layer` says for every cache position
whether it was pruned and where; a batch is left-padded, so pass each example's row without its
padding (its last len(offsets) positions).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class EvidenceRate:
    """Evidence tokens of one prompt (or many, summed) and how many the cascade pruned."""

    answer_tokens: int = 0
    pruned: int = 0
    by_layer: Counter = field(default_factory=Counter)  # pruning layer -> evidence tokens pruned there

    @property
    def share(self) -> float | None:
        """Pruned share of the evidence tokens; None when the prompt had none."""
        return self.pruned / self.answer_tokens if self.answer_tokens else None

    def __add__(self, other: "EvidenceRate") -> "EvidenceRate":
        return EvidenceRate(self.answer_tokens + other.answer_tokens, self.pruned + other.pruned,
                            self.by_layer + other.by_layer)

    def as_dict(self) -> dict:
        return {"answer_tokens": self.answer_tokens, "pruned": self.pruned, "share": self.share,
                "by_layer": {int(k): v for k, v in sorted(self.by_layer.items())}}


def answer_spans(text: str, passage_spans: Sequence[tuple[int, int]],
                 answers: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of every gold answer occurrence inside a passage of `text`."""
    spans = []
    for answer in filter(None, (a.strip() for a in answers)):
        left = r"\b" if answer[0].isalnum() else ""
        right = r"\b" if answer[-1].isalnum() else ""
        pattern = re.compile(left + re.escape(answer) + right, re.IGNORECASE)
        for start, end in passage_spans:
            spans += [(start + m.start(), start + m.end()) for m in pattern.finditer(text[start:end])]
    return spans


def evidence_positions(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Token positions whose character offsets overlap one of `spans`."""
    return [i for i, (a, b) in enumerate(offsets)
            if b > a and any(a < end and start < b for start, end in spans)]


def evidence_rate(pruned_layer: Sequence[int], positions: Sequence[int]) -> EvidenceRate:
    """How many of the evidence `positions` were pruned (`pruned_layer[i]` >= 0), by layer."""
    layers = [int(pruned_layer[i]) for i in positions]
    pruned = [layer for layer in layers if layer >= 0]
    return EvidenceRate(len(layers), len(pruned), Counter(pruned))


def prompt_evidence_rate(text: str, offsets: Sequence[tuple[int, int]],
                         passage_spans: Sequence[tuple[int, int]], answers: Sequence[str],
                         pruned_layer: Sequence[int]) -> EvidenceRate:
    """One prompt's evidence rate: answer occurrences in its passages, their tokens, pruned or not."""
    if len(pruned_layer) != len(offsets):
        raise ValueError(f"{len(pruned_layer)} pruning entries for {len(offsets)} prompt tokens; pass "
                         "the example's row without its left padding")
    return evidence_rate(pruned_layer, evidence_positions(offsets, answer_spans(text, passage_spans, answers)))


def passage_spans(text: str, bodies: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each passage body (as the prompt shows it) inside the rendered `text`; a
    body shown twice gets a different occurrence each time."""
    spans, used = [], set()
    for i, body in enumerate(bodies):
        start = text.find(body)
        while start in used:
            start = text.find(body, start + 1)
        if start < 0:
            raise ValueError(f"passage {i} ({body[:40]!r}...) is not in the rendered prompt")
        used.add(start)
        spans.append((start, start + len(body)))
    return spans


@dataclass
class PromptTrace:
    """What SpAtten did to one prompt: its rendered text, each token's character offsets, the
    layer each token was pruned at (-1: alive to the end), and where its passages are."""

    text: str
    offsets: list[tuple[int, int]]
    pruned_layer: list[int]
    passages: list[tuple[int, int]] = field(default_factory=list)  # passage character spans
    pruned_heads: list[int] = field(default_factory=list)  # per query head: layer pruned from; -1 alive

    def __post_init__(self) -> None:
        if len(self.pruned_layer) != len(self.offsets):
            raise ValueError(f"{len(self.pruned_layer)} pruning entries for {len(self.offsets)} "
                             "prompt tokens")

    @property
    def pruned(self) -> int:
        """Prompt tokens the cascade pruned."""
        return sum(layer >= 0 for layer in self.pruned_layer)

    def evidence(self, answers: Sequence[str]) -> EvidenceRate:
        """The evidence rate of this prompt for the gold `answers` (a reader does not know them: an
        evaluation asks)."""
        return prompt_evidence_rate(self.text, self.offsets, self.passages, answers, self.pruned_layer)
