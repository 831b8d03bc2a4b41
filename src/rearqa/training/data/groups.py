"""REAR's training groups from a retrieval snapshot: candidates, labels, answer targets.

REAR (Wang et al., 2024) trains its rank head on groups of passages per question, labelled
DPR-style from answer matches. For each `*-dev-train` question of a snapshot (rearqa.eval.bundle):

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
order; when no passage contains any alias, the first alias with a letter or digit. Not simply
the first gold answer: TriviaQA lists aliases in an arbitrary order ('The Finer Grain' before
'Henry James', an emoji before 'Helicopter'); for NQ (one answer, 90% of questions) it is the
first answer. (A positive passage whose text does not hold that alias is taught the first alias
it does hold: rearqa.training.data.rear_examples.)

A passage reads as its title line and its text cut to `max_passage_words` words, exactly as the
REAR reader shows it at inference. The baselines (rearqa.training.data.chat_examples) take the
same questions (`train_rows`) and targets (`question_targets`).
"""
from __future__ import annotations

import random
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


def passage_input_text(title: str, text: str, max_words: int = 150) -> str:
    """The title line, then the text cut to `max_words` words: exactly what the REAR reader
    shows at inference (`rearqa.reader.rear.prompting.passage_text`, max_passage_words=150), so
    the model is trained on what it will read."""
    cut = " ".join(text.split()[:max_words])
    return f"{title}\n{cut}" if title else cut


# ---------------------------------------------------------------------------- questions and labels

def train_rows(snapshot, splits: list[str], max_questions: int | None) -> list[tuple[str, dict]]:
    """(split, row) of the first `max_questions` questions of each split (all when None/0)."""
    check_train_splits(splits)
    rows = []
    for split in splits:
        split_rows = snapshot.split(split)
        rows += [(split, row) for row in split_rows[:max_questions or None]]
    return rows


class AnswerMatcher:
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


def _candidates(row: dict, matcher: AnswerMatcher, depth: int, agree_top: int):
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


def _make_groups(split: str, row: dict, matcher: AnswerMatcher, group_size: int, depth: int,
                 agree_top: int, seed: int, samplings: int = 1) -> list[TrainGroup]:
    """The question's group, and `samplings - 1` more with other negatives (see build_groups)."""
    labelled, target, negative_order = _candidates(row, matcher, depth, agree_top)
    positives = sorted((p for p in labelled.values() if p.has_answer),
                       key=lambda p: (-p.grade, p.best_rank))
    n_pos = min(len(positives), max(1, group_size // 2))
    groups = []
    for variant in range(samplings):
        if variant == 0:  # the hardest negatives
            chosen = negative_order[:group_size - n_pos]
        else:  # a seeded sample of all the non-containing candidates
            rng = random.Random(f"{seed}:{row['id']}:negatives:{variant}")
            chosen = rng.sample(negative_order, min(len(negative_order), group_size - n_pos))
        negatives = [labelled[pid] for pid in chosen]
        n = min(len(positives), group_size - len(negatives))  # too few negatives: more positives
        passages = positives[:n] + negatives
        key = row["id"] if variant == 0 else f"{row['id']}:negatives:{variant}"
        random.Random(f"{seed}:{key}").shuffle(passages)
        groups.append(TrainGroup(row["id"] if variant == 0 else f"{row['id']}#{variant}", split,
                                 row["question"], list(row["answers"]), target, passages,
                                 len(labelled), len(positives)))
    return groups


def keeps_unanswered(question_id: str, share: float, seed: int) -> bool:
    """Whether a question with no answer-containing candidate keeps its all-negative group: a
    seeded coin of probability `share` per question id (1 keeps all, 0 none)."""
    if share >= 1:
        return True
    return share > 0 and random.Random(f"{seed}:unanswered:{question_id}").random() < share


def build_groups(snapshot, splits: list[str], group_size: int = 8, depth: int = 20, seed: int = 0,
                 max_questions: int | None = None, agree_top: int = 5,
                 unanswered_share: float = 1.0, negative_samplings: int = 1) -> list[TrainGroup]:
    """REAR training groups for the questions of `splits` (each must end in `-dev-train`).

    `snapshot` is a `rearqa.eval.bundle.Snapshot`; `max_questions` caps each split (first N in
    file order). Deterministic in `seed`: a group's order depends only on (seed, question id).
    `unanswered_share` of the questions whose candidates hold no answer keep their all-negative
    group (`keeps_unanswered`); the others are left out, so that most rank-loss terms compare a
    positive with a negative instead of only pushing scores down.

    `negative_samplings` > 1 adds, per question, that many minus one more groups with the same
    positives and negatives drawn at random (seeded per question and sampling) from all its
    non-containing candidates, ids "<id>#<n>": one pass over the training items then shows each
    question with its hardest negatives once and with resampled ones the other times, so the head
    does not learn one fixed set of negatives per question.
    """
    if group_size < 2:
        raise ConfigError(f"group_size={group_size}: a group needs at least 2 passages")
    rows = train_rows(snapshot, splits, max_questions)
    matcher = AnswerMatcher(snapshot.passages)
    if negative_samplings < 1:
        raise ConfigError(f"negative_samplings={negative_samplings}: must be >= 1")
    groups = []
    for split, row in rows:
        made = _make_groups(split, row, matcher, group_size, depth, agree_top, seed,
                            negative_samplings)
        if made[0].candidate_positives or keeps_unanswered(row["id"], unanswered_share, seed):
            groups += made
    return groups


def question_targets(snapshot, rows: list[tuple[str, dict]], depth: int) -> list[str]:
    """The answer target of each (split, row), chosen as for a REAR group (`choose_target`)."""
    matcher = AnswerMatcher(snapshot.passages)
    return [_candidates(row, matcher, depth, agree_top=1)[1] for _split, row in rows]
