"""Baseline readers: closed-book (no passages) and standard RAG (top-k passages in the prompt).

Both are one chat prompt per question through an engine; RAG cites every passage it was given,
in order (`Answer.cited`: the model read them all and says nothing of which one it used),
closed-book cites none and says the answer came from the model's own knowledge.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rearqa.reader.base import StreamItem, first_line, stream_then_answer
from rearqa.reader.config import READER_METHODS, ReaderConfig
from rearqa.reader.engines import build_engine
from rearqa.reader.prompts import build_messages, get_prompt, shown_text
from rearqa.types import Answer, Citation, Passage


BASELINE_METHODS = ("closed-book", "rag")


class BaselineReader:
    """Closed-book and standard-RAG answers from one engine."""

    def __init__(self, config: ReaderConfig, model_dir: str | Path, engine=None) -> None:
        self.config = config
        self.template = get_prompt(config.prompt)
        # Engine-specific settings are passed only when set: ReaderConfig refuses kv_block_size for
        # engines other than vllm, and TPLA (tp_shards) and inference-time backbones for engines
        # other than hf.
        extra = {"block_size": config.kv_block_size} if config.kv_block_size else {}
        if config.tp_shards:
            extra.update(tpla=config.tpla(), tpla_calib=config.tp_calib)
        if config.backbone:
            extra.update(backbone=config.backbone)
        self.engine = engine or build_engine(
            config.engine, model_dir=model_dir, dtype=config.dtype, threads=config.threads,
            trust_remote_code=config.trust_remote_code, **extra)

    def close(self) -> None:
        """Stop the engine (vLLM's processes; nothing for transformers)."""
        self.engine.close()

    def _method(self, method: str | None) -> str:
        method = method or self.config.method
        if method not in BASELINE_METHODS:
            raise ValueError(f"the baseline reader does {list(BASELINE_METHODS)}, not {method!r} "
                             f"(all reader methods: {list(READER_METHODS)})")
        return method

    def messages(self, question: str, passages: list[Passage], method: str | None = None,
                 history: list[dict] | None = None) -> list[dict]:
        used = passages if self._method(method) == "rag" else None
        return build_messages(question, used, self.template, self.config.max_passage_words, history)

    def make_answer(self, question: str, text: str, passages: list[Passage], method: str) -> Answer:
        text = first_line(text)
        if method == "closed-book":
            return Answer(question, text, [], method=method, from_own_knowledge=True)
        return Answer(question, text, [Citation(p) for p in passages], method=method,
                      cited=list(range(len(passages))))

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        method = self._method(method)
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        answers: list[Answer] = []
        size = self.config.batch_size
        for start in range(0, len(questions), size):
            qs, ps = questions[start:start + size], passages[start:start + size]
            batch = [self.messages(q, p, method) for q, p in zip(qs, ps)]
            if getattr(self.engine, "backbone", ""):  # an inference-time backbone says what it did
                answers += [self._traced_answer(q, p, method, *g) for q, p, g in
                            zip(qs, ps, self.engine.generate_traced(batch, self.config.max_new_tokens))]
                continue
            texts = self.engine.generate(batch, self.config.max_new_tokens)
            answers += [self.make_answer(q, t, p, method) for q, t, p in zip(qs, texts, ps)]
        return answers

    def _traced_answer(self, question: str, passages: list[Passage], method: str, text: str,
                       cost: dict, trace) -> Answer:
        answer = self.make_answer(question, text, passages, method)
        answer.backbone_cost = cost
        if trace is not None and method == "rag":
            from rearqa.reader.backbone.spatten.evidence import passage_spans

            trace.passages = passage_spans(trace.text, [shown_text(p, self.config.max_passage_words)
                                                        for p in passages])
        answer.trace = trace
        return answer

    def stream(self, question: str, passages: list[Passage], method: str | None = None,
               history: list[dict] | None = None) -> Iterator[StreamItem]:
        """Yield the answer's text pieces for one question as the engine makes them, then its Answer."""
        method = self._method(method)
        messages = self.messages(question, passages, method, history)
        pieces = self.engine.stream(messages, self.config.max_new_tokens)
        yield from stream_then_answer(pieces, lambda text: self.make_answer(question, text, passages,
                                                                            method))
