"""REAR training data from a retrieval snapshot: passage groups, labels and generation examples.

REAR (Wang et al., 2024) trains its rank head on groups of passages per question, labelled
DPR-style from answer matches, and its generator on (passage, judgment, answer) examples, some
of them noise-resistant. For each `*-dev-train` question of a snapshot (rearqa.eval.bundle):

    candidates   dense top-`depth` and BM25 top-`depth`, with each passage's rank in both
    coarse label has_answer = the passage text contains a normalised gold answer (DPR has_answer,
                 `rearqa.normalize`, whole-token match)
    fine label   grade = 0.6 + 0.2 * [dense rank <= agree_top] + 0.2 * [BM25 rank <= agree_top]
                 for a positive, 0.0 for a negative. Among positives the passages both retrievers
                 put near the top come first, which demotes spurious matches (a bare year or a
                 common word that one retriever's top-20 happens to contain). Every positive is
                 >= 0.6 (>= pos_threshold 0.5 of the coarse loss), grades differ by 0.2 steps
                 (> minor_diff 0.1), so all positive>negative pairs and agreement pairs count.
    group        up to `group_size` passages: positives (highest grade first) up to half the
                 group, the rest hard negatives -- the highest-ranked non-containing passages,
                 taken alternately from the dense and the BM25 ranking -- then seeded shuffle.
                 Too few negatives: more positives fill the group. Questions with no positive
                 keep an all-negative group (the rank head must learn to say "none"); with
                 `unanswered_share` < 1 only that seeded share of them does.

The answer target is ONE alias per question: the gold alias that the most candidate passages
contain, ties broken by how often it appears verbatim (case included), then by the dataset's
order; when no passage contains any alias, the first alias with a letter or digit. Not simply the first gold answer: TriviaQA lists aliases in an
arbitrary order ('The Finer Grain' before 'Henry James', an emoji before 'Helicopter'); for NQ
(one answer, 90% of questions) it is the first answer. A positive passage whose text does not
hold that alias is taught the first alias it does hold, so its target is always in its text.

Generation examples per group (`generation_examples`): every positive as (passage, <RELEVANT>,
answer) with LM loss on the judgment and the answer; and round(noise_ratio * positives), at
least one, noise-resistant examples (a hard negative, <IRRELEVANT>, the same gold answer, the
judgment token's label masked) -- with noise_ratio 1 that is 1:1, as many noisy passages as
clean ones. The other negatives of the group are scoring prompts only (rank loss, no LM loss).
On NQ + TriviaQA dev-train against the bundled corpus 77% of questions have no positive in
either top-20, so overall there are ~2.7 noise-resistant examples per relevant one (19.5k vs
7.3k): those questions teach answering from the model's own knowledge under <IRRELEVANT>,
which is what REAR's closed-book fallback and knowledge-consistency routing ask of it.

A passage reads as its title line and its text cut to `max_passage_words` words, exactly as the
REAR reader shows it at inference.

The baselines (`rag_examples`, `closed_book_examples`) take the same questions and targets with
the plain chat prompt of `rearqa.reader.prompts`.
"""
from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass

from rearqa.config_errors import ConfigError
from rearqa.normalize import normalize_answer
from rearqa.training.config import check_train_splits

POSITIVE_BASE = 0.6  # grade of a positive that no retriever ranks in its top `agree_top`
AGREEMENT_BONUS = 0.2  # added per retriever that ranks a positive in its top `agree_top`


@dataclass
class GroupPassage:
    """One passage of a training group with its labels and retriever ranks."""

    id: str
    title: str
    text: str
    has_answer: bool  # coarse label: the text contains a normalised gold answer
    grade: float  # fine label: see the module docstring
    dense_rank: int | None  # 1-based rank in the dense top-depth; None when absent
    bm25_rank: int | None  # 1-based rank in the BM25 top-depth; None when absent

    @property
    def best_rank(self) -> int:
        return min(r for r in (self.dense_rank, self.bm25_rank) if r is not None)

    def input_text(self, max_words: int = 150) -> str:
        """What the REAR input shows of this passage (see `passage_input_text`)."""
        return passage_input_text(self.title, self.text, max_words)


@dataclass
class TrainGroup:
    """One question's passages, labels and answer target."""

    id: str
    split: str
    question: str
    answers: list[str]
    target: str  # the answer the generator is taught (see the module docstring)
    passages: list[GroupPassage]
    candidates: int  # distinct passages in dense + BM25 top-depth
    candidate_positives: int  # of which contain an answer (before the cut to the group)


@dataclass
class GenerationExample:
    """A passage of a group that carries LM loss, with the judgment it is conditioned on."""

    passage: int  # index into TrainGroup.passages
    judgment: str  # "relevant" | "irrelevant"
    target: str  # the answer text
    noise_resistant: bool  # irrelevant passage, gold answer still the target, judgment unlabelled


@dataclass
class ChatExample:
    """A baseline example: chat messages (rearqa.reader.prompts) and the answer to learn."""

    id: str
    messages: list[dict]
    target: str


def passage_input_text(title: str, text: str, max_words: int = 150) -> str:
    """The title line, then the text cut to `max_words` words: exactly what the REAR reader
    shows at inference (`rearqa.reader.rear.prompting.passage_text`, max_passage_words=150), so
    the model is trained on what it will read."""
    cut = " ".join(text.split()[:max_words])
    return f"{title}\n{cut}" if title else cut


# ---------------------------------------------------------------------------- questions and labels

def _train_rows(snapshot, splits: list[str], max_questions: int | None) -> list[tuple[str, dict]]:
    """(split, row) of the first `max_questions` questions of each split (all when None/0)."""
    check_train_splits(splits)
    rows = []
    for split in splits:
        split_rows = snapshot.split(split)
        rows += [(split, row) for row in split_rows[:max_questions or None]]
    return rows


class _AnswerMatcher:
    """contains_answer with each passage normalised once (passages recur across questions)."""

    def __init__(self, passages: dict[str, dict]) -> None:
        self.passages = passages
        self._norm: dict[str, str] = {}

    def haystack(self, pid: str) -> str:
        if pid not in self._norm:
            self._norm[pid] = f" {normalize_answer(self.passages[pid]['text'])} "
        return self._norm[pid]

    def aliases_in(self, pid: str, needles: list[str]) -> list[bool]:
        hay = self.haystack(pid)
        return [bool(n) and f" {n} " in hay for n in needles]


def _ranks(row: dict, ranker: str, depth: int) -> dict[str, int]:
    ranking = row["rankings"].get(ranker, [])[:depth]
    ranks: dict[str, int] = {}
    for i, (pid, _score) in enumerate(ranking, start=1):
        ranks.setdefault(pid, i)
    return ranks


def choose_target(answers: list[str], support: list[int], texts: list[str] = ()) -> str:
    """The gold alias the most candidate passages contain (`support[i]` passages hold alias i);
    ties go to the alias written exactly so (case and all) in the most `texts`, then to list
    order ('Italy' over 'ItalY'); with no support, the first alias with a letter or digit."""
    if not answers:
        raise ValueError("a training question has no gold answer")
    best = max(support, default=0)
    if best > 0:
        tied = [i for i, s in enumerate(support) if s == best]
        verbatim = {i: sum(answers[i] in t for t in texts) for i in tied}
        return answers[max(tied, key=lambda i: (verbatim[i], -i))]
    return next((a for a in answers if any(ch.isalnum() for ch in a)), answers[0])


def grade(has_answer: bool, dense_rank: int | None, bm25_rank: int | None, agree_top: int) -> float:
    """Fine graded label: 0 for a negative; 0.6 + 0.2 per retriever agreeing (top agree_top)."""
    if not has_answer:
        return 0.0
    agree = sum(r is not None and r <= agree_top for r in (dense_rank, bm25_rank))
    return round(POSITIVE_BASE + AGREEMENT_BONUS * agree, 6)


def _candidates(row: dict, matcher: _AnswerMatcher, depth: int, agree_top: int):
    """Labelled candidates in first-seen order, the question's target, and hard-negative order."""
    dense, bm25 = _ranks(row, "dense", depth), _ranks(row, "bm25", depth)
    needles = [normalize_answer(a) for a in row["answers"]]
    support = [0] * len(needles)
    labelled: dict[str, GroupPassage] = {}
    hits: dict[str, list[bool]] = {}
    for pid in list(dense) + [p for p in bm25 if p not in dense]:
        hits[pid] = matcher.aliases_in(pid, needles)
        support = [s + h for s, h in zip(support, hits[pid])]
        p = matcher.passages[pid]
        has = any(hits[pid])
        labelled[pid] = GroupPassage(pid, p.get("title", ""), p["text"], has,
                                     grade(has, dense.get(pid), bm25.get(pid), agree_top),
                                     dense.get(pid), bm25.get(pid))
    # Hard negatives: the highest-ranked non-containing passages, dense and BM25 alternately.
    dense_neg = [p for p in dense if not labelled[p].has_answer]
    bm25_neg = [p for p in bm25 if not labelled[p].has_answer]
    order: list[str] = []
    for i in range(max(len(dense_neg), len(bm25_neg))):
        for ranking in (dense_neg, bm25_neg):
            if i < len(ranking) and ranking[i] not in order:
                order.append(ranking[i])
    texts = [p.text for p in labelled.values() if p.has_answer]
    return labelled, choose_target(row["answers"], support, texts), order


def _make_group(split: str, row: dict, matcher: _AnswerMatcher, group_size: int, depth: int,
                agree_top: int, seed: int) -> TrainGroup:
    labelled, target, negative_order = _candidates(row, matcher, depth, agree_top)
    positives = sorted((p for p in labelled.values() if p.has_answer),
                       key=lambda p: (-p.grade, p.best_rank))
    n_pos = min(len(positives), max(1, group_size // 2))
    negatives = [labelled[pid] for pid in negative_order[:group_size - n_pos]]
    n_pos = min(len(positives), group_size - len(negatives))  # too few negatives: more positives
    passages = positives[:n_pos] + negatives
    random.Random(f"{seed}:{row['id']}").shuffle(passages)
    return TrainGroup(row["id"], split, row["question"], list(row["answers"]), target, passages,
                      len(labelled), len(positives))


def keeps_unanswered(question_id: str, share: float, seed: int) -> bool:
    """Whether a question with no answer-containing candidate keeps its all-negative group: a
    seeded coin of probability `share` per question id (1 keeps all, 0 none)."""
    if share >= 1:
        return True
    return share > 0 and random.Random(f"{seed}:unanswered:{question_id}").random() < share


def build_groups(snapshot, splits: list[str], group_size: int = 8, depth: int = 20, seed: int = 0,
                 max_questions: int | None = None, agree_top: int = 5,
                 unanswered_share: float = 1.0) -> list[TrainGroup]:
    """REAR training groups for the questions of `splits` (each must end in `-dev-train`).

    `snapshot` is a `rearqa.eval.bundle.Snapshot`; `max_questions` caps each split (first N in
    file order). Deterministic in `seed`: a group's order depends only on (seed, question id).
    `unanswered_share` of the questions whose candidates hold no answer keep their all-negative
    group (`keeps_unanswered`); the others are left out, so that most rank-loss terms compare a
    positive with a negative instead of only pushing scores down.
    """
    if group_size < 2:
        raise ConfigError(f"group_size={group_size}: a group needs at least 2 passages")
    rows = _train_rows(snapshot, splits, max_questions)
    matcher = _AnswerMatcher(snapshot.passages)
    groups = [_make_group(split, row, matcher, group_size, depth, agree_top, seed)
              for split, row in rows]
    return [g for g in groups
            if g.candidate_positives or keeps_unanswered(g.id, unanswered_share, seed)]


# ---------------------------------------------------------------------------- generation examples

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
                max_question_tokens: int | None = 64, max_answer_tokens: int | None = 15) -> list:
    """One `RearInput` per passage of the group, in group order: generation examples carry their
    judgment and answer, the other passages are scoring prompts (rank loss only)."""
    from rearqa.reader.rear.inputs import build_rear_input

    by_passage = {ex.passage: ex for ex in generation_examples(group, noise_ratio)}
    inputs = []
    for i, passage in enumerate(group.passages):
        ex = by_passage.get(i)
        inputs.append(build_rear_input(
            tokenizer, passage.input_text(max_passage_words), group.question,
            ex.judgment if ex else None, ex.target if ex else None,
            use_chat_template=use_chat_template,
            noise_resistant=bool(ex and ex.noise_resistant), max_passage_tokens=max_passage_tokens,
            max_question_tokens=max_question_tokens, max_answer_tokens=max_answer_tokens))
    return inputs


# ---------------------------------------------------------------------------- baselines

def _question_targets(snapshot, rows: list[tuple[str, dict]], depth: int) -> list[str]:
    matcher = _AnswerMatcher(snapshot.passages)
    return [_candidates(row, matcher, depth, agree_top=1)[1] for _split, row in rows]


def rag_examples(snapshot, splits: list[str], k: int = 3, depth: int = 20,
                 max_questions: int | None = None, prompt: str = "short",
                 max_passage_words: int = 150) -> list[ChatExample]:
    """Standard-RAG fine-tuning examples: the chat prompt with the dense top-k passages, exactly
    as `BaselineReader` builds it, and the same target as the REAR groups."""
    from rearqa.reader.prompts import build_messages, get_prompt

    template = get_prompt(prompt)
    rows = _train_rows(snapshot, splits, max_questions)
    examples = []
    for (split, row), target in zip(rows, _question_targets(snapshot, rows, depth)):
        passages = snapshot.ranked(row, "dense", k)
        examples.append(ChatExample(row["id"], build_messages(row["question"], passages, template,
                                                              max_passage_words), target))
    return examples


def closed_book_examples(snapshot, splits: list[str], depth: int = 20,
                         max_questions: int | None = None,
                         prompt: str = "short") -> list[ChatExample]:
    """Closed-book fine-tuning examples: the chat prompt with no passages, the same targets."""
    from rearqa.reader.prompts import build_messages, get_prompt

    template = get_prompt(prompt)
    rows = _train_rows(snapshot, splits, max_questions)
    return [ChatExample(row["id"], build_messages(row["question"], None, template, 0), target)
            for (split, row), target in zip(rows, _question_targets(snapshot, rows, depth))]


def encode_chat_example(tokenizer, example: ChatExample,
                        max_answer_tokens: int | None = 15) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered chat prompt + answer + eos, and the label mask (answer + eos)."""
    prompt = tokenizer.apply_chat_template(example.messages, tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]  # template holds them
    answer = tokenizer(example.target, add_special_tokens=False,
                       split_special_tokens=True)["input_ids"][:max_answer_tokens]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to end the answer with")
    tail = answer + [tokenizer.eos_token_id]
    return prompt_ids + tail, [False] * len(prompt_ids) + [True] * len(tail)


# ---------------------------------------------------------------------------- statistics

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



# ---------------------------------------------------------------------------- batches

def rear_batch(groups: list[TrainGroup], tokenizer, *, use_chat_template: bool,
               noise_ratio: float = 1.0, max_passage_words: int = 150,
               max_passage_tokens: int | None = 200,
               max_question_tokens: int | None = 64,
               max_answer_tokens: int | None = 15) -> dict:
    """One REAR micro-batch, right-padded: the collated inputs of every passage of every group
    (B x group_size rows) plus `grades` (N,) and `group_ids` (N,) for the rank loss."""
    import torch

    from rearqa.reader.rear.inputs import collate_rear_inputs

    inputs, grades, group_ids = [], [], []
    for g, group in enumerate(groups):
        inputs += rear_inputs(group, tokenizer, use_chat_template=use_chat_template,
                              noise_ratio=noise_ratio, max_passage_words=max_passage_words,
                              max_passage_tokens=max_passage_tokens,
                              max_question_tokens=max_question_tokens,
                              max_answer_tokens=max_answer_tokens)
        grades += [p.grade for p in group.passages]
        group_ids += [g] * len(group.passages)
    batch = collate_rear_inputs(inputs, pad_id(tokenizer), padding_side="right")
    batch["grades"] = torch.tensor(grades, dtype=torch.float32)
    batch["group_ids"] = torch.tensor(group_ids)
    return batch


def chat_batch(encoded: list[tuple[list[int], list[bool]]], pad_token_id: int) -> dict:
    """Right-padded input_ids, attention_mask and labels (-100 off the answer) of chat examples."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for ids, mask in encoded:
        pad = width - len(ids)
        rows["input_ids"].append(ids + [pad_token_id] * pad)
        rows["attention_mask"].append([1] * len(ids) + [0] * pad)
        rows["labels"].append([t if m else -100 for t, m in zip(ids, mask)] + [-100] * pad)
    return {k: torch.tensor(v) for k, v in rows.items()}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
