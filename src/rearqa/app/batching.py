"""Micro-batching of questions: asks that arrive together are retrieved and read together.

One-at-a-time serving leaves the reader's batching unused: each POST /ask embedded one question,
searched once and generated for one prompt while the others waited. `AskBatcher` gathers the
questions that are waiting (the ones that arrived while earlier batches ran, or within
`window_s` of the first at an idle server) into one `Pipeline.ask_batch` call: one batched
embedding and search (`search_batch`), one batched read (`read_batch`). Questions are grouped by
what the call shares (k, filters, method, retriever), up to `max_batch` a call, and at most
`max_batches` calls run at once, so the next batch is retrieved while the last one is read (on
vLLM the two are read together: the engine batches step by step, engines/vllm_loop.py; on
transformers the generate calls take turns).

Admission stays where it was (admission.py): a request is admitted or refused with 429 before it
reaches the batcher; the batcher itself never refuses. An error of a batch call (a bad filter
shared by the group, or a real failure) is raised to every request of that batch, each of which
answers as it would have alone (422 for user errors, 500 otherwise).
"""
from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool


@dataclass(frozen=True)
class BatchKey:
    """What the questions of one `ask_batch` call share."""

    k: int | None
    filters: str  # the filters as canonical JSON ("null" for none), so keys are hashable
    method: str | None
    retriever: str | None

    @classmethod
    def of(cls, k: int | None, filters: dict | None, method: str | None,
           retriever: str | None) -> "BatchKey":
        return cls(k, json.dumps(filters, sort_keys=True), method, retriever)


@dataclass
class _Waiting:
    key: BatchKey
    question: str
    filters: dict | None
    answer: asyncio.Future = field(repr=False)


class AskBatcher:
    """Gathers waiting questions into `ask_batch(questions, k, filters=, method=, retriever=)` calls."""

    def __init__(self, ask_batch: Callable[..., list], max_batch: int, max_batches: int = 2,
                 window_s: float = 0.005) -> None:
        self.ask_batch = ask_batch
        self.max_batch = max_batch
        self.max_batches = max_batches
        self.window_s = window_s
        self.running = 0  # batch calls at work
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # size -> calls so far
        self._waiting: list[_Waiting] = []

    async def ask(self, question: str, k: int | None = None, *, filters: dict | None = None,
                  method: str | None = None, retriever: str | None = None) -> Any:
        """The Answer to `question`, read in a batch with whatever else is waiting."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(BatchKey.of(k, filters, method, retriever), question, filters, answer))
        self._start_batches()
        return await answer

    def _start_batches(self) -> None:
        while self._waiting and self.running < self.max_batches:
            self.running += 1
            asyncio.get_running_loop().create_task(self._run_batch())

    def _take(self) -> list[_Waiting]:
        """The oldest waiting question and the others that share its key, up to max_batch."""
        key = self._waiting[0].key
        batch = [w for w in self._waiting if w.key == key][:self.max_batch]
        taken = {id(w) for w in batch}
        self._waiting = [w for w in self._waiting if id(w) not in taken]
        return batch

    async def _run_batch(self) -> None:
        try:
            if len(self._waiting) < self.max_batch and self.window_s > 0:
                await asyncio.sleep(self.window_s)  # let questions sent together arrive together
            batch = self._take() if self._waiting else []
            if batch:
                await self._read(batch)
        finally:
            self.running -= 1
            self._start_batches()

    async def _read(self, batch: list[_Waiting]) -> None:
        key, first = batch[0].key, batch[0]
        self.batch_sizes[len(batch)] += 1
        try:
            answers = await run_in_threadpool(self.ask_batch, [w.question for w in batch], key.k,
                                              filters=first.filters, method=key.method,
                                              retriever=key.retriever)
        except Exception as exc:  # every request of the batch answers with it (422 or 500)
            for w in batch:
                if not w.answer.done():
                    w.answer.set_exception(exc)
            return
        for w, answer in zip(batch, answers):
            if not w.answer.done():  # a client that went away leaves a cancelled future
                w.answer.set_result(answer)
