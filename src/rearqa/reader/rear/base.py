"""What every REAR engine shares: the reader seam, batching, the row layout and routing.

REAR (Wang et al., 2024) reads each of a question's k passages separately: score every passage,
answer under its judgment, route to one answer (the steps are in rearqa.reader.rear.reader).
`RearReaderBase` holds what does not depend on the engine; `RearReader` (reader.py) computes the
readings with transformers, `VllmRearReader` (vllm_reader.py) with vLLM, and `reader.engine`
picks one (REAR_ENGINES in rearqa.reader.rear.config).
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from rearqa.reader.base import StreamItem, word_pieces
from rearqa.reader.config import ReaderConfig
from rearqa.reader.rear.config import RearConfig, RoutingConfig, sigmoid
from rearqa.reader.rear.inputs import RearInput
from rearqa.reader.rear.prompting import PromptBuilder, passage_text
from rearqa.reader.rear.routing import route
from rearqa.types import Answer, Citation, Passage

METHOD = "rear"
CLOSED_BOOK_ROW = -1  # passage index of a question's no-passage row


@dataclass
class Reading:
    """Everything REAR computed for one question's passages (before routing)."""

    scores: list[float]  # relevance logit per passage
    judgments: list[str]  # judgment token each answer was conditioned on
    answers: list[str]  # per-passage answer (first line)
    confidences: list[float | None]  # con_i of answers[i] after <IRRELEVANT>; None = not computed
    closed_book: str | None = None  # the no-passage answer, when it was computed
    cost: dict = field(default_factory=dict)  # an inference-time backbone's counters, summed over the rows


class RearReaderBase:
    """What every REAR engine shares: the reader seam, batching, the row layout and routing.

    An engine subclass loads its model and implements `_read_chunk` (score, generate, confidences
    for one batch of questions) with the helpers below, so the prompts, judgments and readings
    are the same whichever engine computes them.
    """

    def __init__(self, config: ReaderConfig, rear_config: RearConfig, tokenizer) -> None:
        self.config = config
        self.routing = self._routing(rear_config.routing)
        self.relevance_platt = rear_config.relevance_platt  # (a, b) or None: uncalibrated
        self.tokenizer = tokenizer
        self._prompts = PromptBuilder(tokenizer, rear_config.use_chat_template,
                                      rear_config.question_first)
        self._lock = threading.Lock()  # one batch at a time: the model is not re-entrant

    def _routing(self, stored: RoutingConfig) -> RoutingConfig:
        """The checkpoint's routing (threshold, gamma), with the reader config's overrides."""
        overrides = {name: value for name, value in (("method", self.config.routing),
                                                     ("fallback", self.config.fallback)) if value}
        return dataclasses.replace(stored, **overrides)

    def _method(self, method: str | None) -> str:
        method = method or METHOD
        if method != METHOD:
            raise ValueError(f"RearReader serves method {METHOD!r}, not {method!r}")
        return method

    # ------------------------------------------------------------------ the seam

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        """One Answer per question; `reader.batch_size` questions (all their passages) at a time."""
        self._method(method)
        readings = self.read(questions, passages)
        return [self.answer(q, p, r) for q, p, r in zip(questions, passages, readings)]

    def stream(self, question: str, passages: list[Passage], method: str | None = None,
               history: list[dict] | None = None) -> Iterator[StreamItem]:
        """Yield the routed answer in word pieces, then the Answer. REAR chooses among complete
        per-passage answers, so the answer is computed first. Chat `history` is not used: each
        passage is read with the question alone, as REAR was trained."""
        self._method(method)
        answer = self.read_batch([question], [passages])[0]
        yield from word_pieces(answer.text)
        yield answer

    def answer(self, question: str, passages: list[Passage], reading: Reading) -> Answer:
        """Route one question's reading to its Answer (citations: every passage, in order;
        cited: the passage routing chose, none when it fell back)."""
        decision = route(reading.scores, reading.answers, reading.confidences, self.routing)
        citations = [Citation(p, relevance=s, judgment=j, answer=a, probability=self.probability(s))
                     for p, s, j, a in zip(passages, reading.scores, decision.judgments, reading.answers)]
        if decision.mode == "passage":
            answer = Answer(question, decision.answer, citations, method=METHOD,
                            cited=[decision.index])
        elif decision.mode == "abstain":
            answer = Answer(question, "", citations, method=METHOD, abstained=True)
        elif reading.closed_book is None:
            raise RuntimeError("closed-book fallback without a closed-book answer (internal error)")
        else:
            answer = Answer(question, reading.closed_book, citations, method=METHOD,
                            from_own_knowledge=True)
        answer.backbone_cost = dict(reading.cost)
        return answer

    def probability(self, logit: float) -> float | None:
        """The relevance logit through the checkpoint's dev-select Platt map; None without one."""
        if self.relevance_platt is None:
            return None
        return sigmoid(self.relevance_platt[0] * logit + self.relevance_platt[1])

    # ------------------------------------------------------------------ reading

    def read(self, questions: list[str], passages: list[list[Passage]], force: str | None = None,
             all_confidences: bool = False, closed_book: bool | None = None) -> list[Reading]:
        """Score, generate and (where routing needs them) compute confidences, batch by batch.

        force: None (judgment from the threshold), "relevant" or "irrelevant" (every passage
        answered under that judgment: threshold selection). all_confidences: con_i for every
        passage, not only the relevant ones under knowledge-consistency. closed_book: compute
        the no-passage answer (default: when the fallback is closed_book).
        """
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        if force not in (None, "relevant", "irrelevant"):
            raise ValueError(f"force={force!r}: choose None, 'relevant' or 'irrelevant'")
        closed_book = self.routing.fallback == "closed_book" if closed_book is None else closed_book
        readings: list[Reading] = []
        size = self.config.batch_size
        for start in range(0, len(questions), size):
            with self._lock:
                readings += self._read_chunk(questions[start:start + size],
                                             passages[start:start + size], force,
                                             all_confidences, closed_book)
        return readings

    def _read_chunk(self, questions: list[str], passages: list[list[Passage]], force: str | None,
                    all_confidences: bool, closed_book: bool) -> list[Reading]:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared row logic

    def _layout(self, questions: list[str], passages: list[list[Passage]], closed_book: bool
                ) -> tuple[list[tuple[int, int]], list[RearInput]]:
        """One scoring prompt per passage (and per question's no-passage row when closed_book).

        owners[r] = (question index, passage index or CLOSED_BOOK_ROW) of prompt row r.
        """
        owners, texts = [], []
        for qi, ps in enumerate(passages):
            rows = [passage_text(p, self.config.max_passage_words) for p in ps]
            for pi, text in [*enumerate(rows), *([(CLOSED_BOOK_ROW, "")] if closed_book else [])]:
                owners.append((qi, pi))
                texts.append(text)
        return owners, self._prompts.build(texts, questions, [qi for qi, _ in owners])

    def _judge(self, owners: list[tuple[int, int]], passage_rows: list[int], scores: list[float],
               force: str | None) -> list[str]:
        """The judgment of every row; the closed-book row is told "irrelevant"."""
        judgments = ["irrelevant"] * len(owners)
        for r, s in zip(passage_rows, scores):
            judgments[r] = force or ("relevant" if s > self.routing.threshold else "irrelevant")
        return judgments

    def _need_confidence(self, passage_rows: list[int], judgments: list[str],
                         all_confidences: bool) -> list[int]:
        """Rows whose con_i routing needs: the relevant ones under knowledge-consistency."""
        return [r for r in passage_rows if all_confidences or (
            self.routing.method == "knowledge_consistency" and judgments[r] == "relevant")]

    @staticmethod
    def _collect(n_questions: int, owners: list[tuple[int, int]], passage_rows: list[int],
                 scores: list[float], judgments: list[str], answers: list[str],
                 confidences: dict[int, float], costs: list[dict] | None = None) -> list[Reading]:
        """The readings of one batch; `costs` (one dict of counters per row, from an
        inference-time backbone) are summed into each question's `Reading.cost`."""
        readings = [Reading([], [], [], [], None) for _ in range(n_questions)]
        score_of = dict(zip(passage_rows, scores))
        for r, (qi, pi) in enumerate(owners):
            reading = readings[qi]
            for name, value in (costs[r] if costs else {}).items():
                reading.cost[name] = reading.cost.get(name, 0) + value
            if pi == CLOSED_BOOK_ROW:
                reading.closed_book = answers[r]
                continue
            reading.scores.append(score_of[r])
            reading.judgments.append(judgments[r])
            reading.answers.append(answers[r])
            reading.confidences.append(confidences.get(r))
        return readings
