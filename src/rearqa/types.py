"""The values that flow through rearqa: retrieved passages and final answers.

Every retriever returns `Passage` objects with a score; every reader returns an `Answer`
whose citations keep the passage together with what the reader judged of it, and whose `cited`
says which of those passages the answer itself rests on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Passage:
    """One retrieved chunk of a document."""

    id: str  # stable docstore id of the chunk
    text: str  # the chunk text, shown to users verbatim (as text, never as HTML)
    title: str = ""  # document title, if known
    score: float = 0.0  # retrieval score; higher is better (cosine, BM25, or fused)
    source: str = ""  # where the chunk came from (file path or corpus name)
    metadata: dict[str, Any] = field(default_factory=dict)  # tags and other user metadata

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Citation:
    """A passage as the reader used it, with the reader's judgment where it made one."""

    passage: Passage
    relevance: float | None = None  # reader's relevance logit (REAR rank head); None for plain RAG
    judgment: str | None = None  # "relevant" / "irrelevant" (REAR); None for plain RAG
    answer: str | None = None  # the per-passage answer (REAR); None for plain RAG
    # the relevance logit as a probability that the passage holds the answer, through the
    # checkpoint's dev-select calibration; None when the reader has none (or does not judge)
    probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passage": self.passage.to_dict(), "relevance": self.relevance,
                "judgment": self.judgment, "answer": self.answer, "probability": self.probability}


@dataclass
class Answer:
    """The final answer to one question."""

    question: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    method: str = "rag"  # reader method that produced it: closed-book | rag | rear ...
    abstained: bool = False  # True when the reader withheld an answer
    from_own_knowledge: bool = False  # True when no passage was used (closed-book fallback)
    # Positions in `citations` (0-based) of the passages the answer rests on, in order: RAG the
    # passages it was given, REAR the one its routing chose; [] for closed-book and abstentions.
    cited: list[int] = field(default_factory=list)
    # The reader's backbone: "original", or the transform that converted it ("transmla(96+64)");
    # set by the pipeline, "" where no pipeline labelled it.
    backbone: str = ""
    # What an inference-time backbone (SpAtten) spent on this answer against the unpruned model:
    # attention FLOPs, KV bytes, tokens pruned ({} without one). `trace` says which prompt tokens
    # it pruned (evidence.PromptTrace) for an evaluation to check against gold answers; it stays
    # in memory (no JSON).
    backbone_cost: dict[str, Any] = field(default_factory=dict)
    trace: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        bad = [i for i in self.cited if not 0 <= i < len(self.citations)]
        if bad:
            raise ValueError(f"Answer.cited {self.cited} names positions {bad} outside its "
                             f"{len(self.citations)} citations")

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "text": self.text, "method": self.method,
                "abstained": self.abstained, "from_own_knowledge": self.from_own_knowledge,
                "citations": [c.to_dict() for c in self.citations], "cited": list(self.cited),
                "backbone": self.backbone, "backbone_cost": dict(self.backbone_cost)}
