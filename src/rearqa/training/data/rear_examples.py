"""What REAR's generator learns from a training group: generation examples and REAR inputs.

REAR (Wang et al., 2024) trains its generator on (passage, judgment, answer) examples, some of
them noise-resistant. Generation examples per group (`generation_examples`, groups from
rearqa.training.data.groups): every positive as (passage, <RELEVANT>, answer) with LM loss on
the judgment and the answer; and round(noise_ratio * positives), at least one, noise-resistant
examples (a hard negative, <IRRELEVANT>, the same gold answer, the judgment token's label
masked) -- with noise_ratio 1 that is 1:1, as many noisy passages as clean ones. The other
negatives of the group are scoring prompts only (rank loss, no LM loss). A positive passage
whose text does not hold the group's target is taught the first alias it does hold, so its
target is always in its text.

Against the bundled corpus most NQ + TriviaQA dev-train questions have no positive in either
top-20, so noise-resistant examples outnumber relevant ones (a run's data_stats.json counts
both): those questions teach answering from the model's own knowledge under <IRRELEVANT>,
which is what REAR's closed-book fallback and knowledge-consistency routing ask of it.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

from rearqa.normalize import normalize_answer
from rearqa.training.config import JUDGMENT_LOSSES
from rearqa.training.data.groups import GroupPassage, TrainGroup


@dataclass
class GenerationExample:
    """A passage of a group that carries LM loss, with the judgment it is conditioned on."""

    passage: int  # index into TrainGroup.passages
    judgment: str  # "relevant" | "irrelevant"
    target: str  # the answer text
    noise_resistant: bool  # irrelevant passage, gold answer still the target, judgment unlabelled


def _passage_target(group: TrainGroup, passage: GroupPassage) -> str:
    """The group's target, or the first alias this positive passage actually holds."""
    hay = f" {normalize_answer(passage.text)} "
    for alias in [group.target] + group.answers:
        needle = normalize_answer(alias)
        if needle and f" {needle} " in hay:
            return alias
    return group.target


def generation_examples(group: TrainGroup, noise_ratio: float = 1.0) -> list[GenerationExample]:
    """The group's passages that carry LM loss (see the module docstring), in group order.

    Positives: <RELEVANT> + answer. Noise-resistant: the hardest negatives (best retriever rank
    first), round(noise_ratio * positives) of them and at least one, <IRRELEVANT> + the gold
    answer with the judgment token's label masked.
    """
    positives = [i for i, p in enumerate(group.passages) if p.has_answer]
    negatives = sorted((i for i, p in enumerate(group.passages) if not p.has_answer),
                       key=lambda i: group.passages[i].best_rank)
    n_noise = min(len(negatives), max(1, round(noise_ratio * len(positives))))
    examples = {i: GenerationExample(i, "relevant", _passage_target(group, group.passages[i]), False)
                for i in positives}
    examples.update({i: GenerationExample(i, "irrelevant", group.target, True)
                     for i in negatives[:n_noise]})
    return [examples[i] for i in sorted(examples)]


def rear_inputs(group: TrainGroup, tokenizer, *, use_chat_template: bool, noise_ratio: float = 1.0,
                max_passage_words: int = 150, max_passage_tokens: int | None = 200,
                max_question_tokens: int | None = 64, max_answer_tokens: int | None = 15,
                judgment_loss: str = "positives", question_first: bool = False) -> list:
    """One `RearInput` per passage of the group, in group order: generation examples carry their
    judgment and answer, the other passages are scoring prompts (rank loss only).

    judgment_loss (which judgment tokens after <GENERATE_SCORE> are LM targets):
        positives  <RELEVANT> of the positives only: REAR's recipe, and the function's default.
                   Noise-resistant negatives mask theirs and scoring-only rows have none, so the
                   target at the score position is always <RELEVANT>, and the LM loss pushes the
                   hidden state the rank head reads there toward one constant.
        balanced   every row: <RELEVANT> on positives, <IRRELEVANT> on every negative (scoring-only
                   rows get the judgment token alone), so the judgment is a second classifier of
                   the same state, trained on both kinds of passage
        none       no row: the judgment is forced from the rank head at inference anyway
    """
    from rearqa.reader.rear.inputs import build_rear_input

    if judgment_loss not in JUDGMENT_LOSSES:
        raise ValueError(f"judgment_loss={judgment_loss!r}: choose one of {list(JUDGMENT_LOSSES)}")
    by_passage = {ex.passage: ex for ex in generation_examples(group, noise_ratio)}
    inputs = []
    for i, passage in enumerate(group.passages):
        ex = by_passage.get(i)
        judgment = ex.judgment if ex else ("irrelevant" if judgment_loss == "balanced" else None)
        learned = judgment_loss == "balanced" or (
            judgment_loss == "positives" and ex is not None and not ex.noise_resistant)
        inputs.append(build_rear_input(
            tokenizer, passage.input_text(max_passage_words), group.question,
            judgment, ex.target if ex else None, use_chat_template=use_chat_template,
            noise_resistant=not learned, max_passage_tokens=max_passage_tokens,
            max_question_tokens=max_question_tokens, max_answer_tokens=max_answer_tokens,
            question_first=question_first))
    return inputs


def group_stats(groups: list[TrainGroup], noise_ratio: float = 1.0) -> dict:
    """What the builder produced: sizes, positives per group, label and target statistics."""
    if not groups:
        return {"questions": 0}
    pos = [sum(p.has_answer for p in g.passages) for g in groups]
    grades = [p.grade for g in groups for p in g.passages if p.has_answer]
    examples = [generation_examples(g, noise_ratio) for g in groups]
    noisy = sum(ex.noise_resistant for exs in examples for ex in exs)
    clean = sum(not ex.noise_resistant for exs in examples for ex in exs)
    return {
        "questions": len(groups),
        "by_split": dict(Counter(g.split for g in groups)),
        "passages": sum(len(g.passages) for g in groups),
        "mean_group_size": statistics.fmean(len(g.passages) for g in groups),
        "mean_candidates": statistics.fmean(g.candidates for g in groups),
        "mean_positives_per_group": statistics.fmean(pos),
        "positives_per_group": {str(k): v for k, v in sorted(Counter(min(n, 4) for n in pos).items())},
        "questions_without_positive": sum(n == 0 for n in pos),
        "share_without_positive": sum(n == 0 for n in pos) / len(groups),
        "mean_candidate_positives": statistics.fmean(g.candidate_positives for g in groups),
        "positive_grades": {f"{k:.1f}": v for k, v in sorted(Counter(grades).items())},
        "generation_examples": clean + noisy,
        "noise_resistant_examples": noisy,
        "relevant_examples": clean,
        "target_is_first_answer": sum(g.target == g.answers[0] for g in groups) / len(groups),
    }

