"""What the HTTP routes share: the server's settings, its `ServerState` (the pipeline, the
request queue, the warm-up state, the upload lock) and the response helpers every router uses.

`server.py` composes the app from the routers (its own /ask and /health, `documents_api`,
`openai_api`); the routers take a `ServerState` and import it from here, never from the
composition root, so no app module imports back up.
"""
# No `from __future__ import annotations`: the server and routers pass these classes to FastAPI.
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from rearqa.app.admission import RequestQueue, Ticket
from rearqa.app.batching import AskBatcher
from rearqa.app.jobs import JOBS_FILE, IngestJobs, JobSettings
from rearqa.app.schemas import AskOptions, request_models, served_methods
from rearqa.config_errors import ConfigError
from rearqa.reader import check_question
from rearqa.types import Answer

# The log name the warm-up has always used (it ran in rearqa.app.server before the split).
log = logging.getLogger("rearqa.app.server")


@dataclass
class ServerConfig:
    """Settings of the HTTP server (the pipeline keeps its own)."""

    token: str | None = None  # bearer token every route but /health and the docs requires; None = open
    max_batch: int = 1  # questions of POST /ask (and plain OpenAI chat) read in one batch; 1 = one at a time
    max_in_flight: int | None = None  # requests handed to the reader at once; None = 1, or with
    #                                   batching max_batch x BATCHES_AT_ONCE (streams count too)
    max_queue: int = 8  # requests waiting behind them; more are refused with 429 + Retry-After
    max_upload_bytes: int = 20 * 1024 * 1024  # largest accepted document upload
    warm: bool = True  # open the collection and load the reader at start (health: loading -> ready)
    jobs: JobSettings = field(default_factory=JobSettings)  # large uploads as background jobs

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8
                                       or self.token != self.token.strip()):
            raise ConfigError(f"token of {len(str(self.token))} characters: give at least 8 characters "
                              "with no surrounding spaces (e.g. `openssl rand -hex 32`), or no token")
        if self.max_in_flight is None:
            self.max_in_flight = 1 if self.max_batch == 1 else self.max_batch * BATCHES_AT_ONCE
        for name in ("max_batch", "max_in_flight", "max_upload_bytes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be a positive integer")
        if not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ConfigError(f"max_queue={self.max_queue!r}: must be 0 or a positive integer")


# Batch calls at work at once: the next batch is retrieved (and on vLLM read) while one is read.
BATCHES_AT_ONCE = 2
# `rearqa serve`'s max_batch per reader engine, from the load runs of docs/reliability.md.
DEFAULT_MAX_BATCH = {"hf": 8, "vllm": 32}


class EngineUnavailable(Exception):
    """The collection or reader failed to load at start; /health has the reason."""


class ServerState:
    """The pipeline and what the routes share: queue, warm-up state, upload lock."""

    def __init__(self, pipeline, config: ServerConfig) -> None:
        self.pipeline = pipeline
        self.config = config
        self.queue = RequestQueue(config.max_in_flight, config.max_queue)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.write_lock = threading.Lock()  # one upload or delete at a time (file + docstore)
        self.jobs = IngestJobs(lambda: self._when_ready(lambda: pipeline.collection),
                               pipeline.collection_path / JOBS_FILE, config.jobs, self.write_lock)
        self.methods = served_methods(pipeline.config.reader.method)
        self.request_models = request_models(pipeline.config.reader.max_question_chars, self.methods)
        self.batcher = (AskBatcher(self._ask_batch_when_ready, config.max_batch, BATCHES_AT_ONCE)
                        if config.max_batch > 1 else None)
        if config.warm:
            threading.Thread(target=self._warm, name="rearqa-warm-up", daemon=True).start()
        else:
            self.ready.set()  # components open lazily on first use

    def _warm(self) -> None:
        try:
            self.pipeline.collection  # noqa: B018 (opens, or builds the default collection)
            self.pipeline.reader  # noqa: B018
        except Exception as exc:  # kept for /health and EngineUnavailable; logged in full here
            log.exception("warm-up failed")
            self.error = exc
        finally:
            self.ready.set()

    def _when_ready(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        self.ready.wait()
        if self.error is not None:
            raise EngineUnavailable(f"the server could not load its components: {self.error}")
        return fn(*args, **kwargs)

    async def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` in a worker thread, once admitted by the queue."""
        async with self.queue.admit():
            return await run_in_threadpool(self._when_ready, fn, *args, **kwargs)

    async def ask(self, question: str, options: AskOptions, method: str | None) -> Answer:
        """One question answered once admitted: alone (max_batch 1), or in a batch with the
        questions waiting beside it (batching.py). The question is checked here, where it
        enters, so one bad question cannot fail the batch it would have joined."""
        kwargs = dict(filters=options.filters, method=method, retriever=options.retriever)
        if self.batcher is None:
            return await self.run(self.pipeline.ask, question, options.k, **kwargs)
        question = check_question(question, self.pipeline.config.reader.max_question_chars)
        async with self.queue.admit():
            return await self.batcher.ask(question, options.k, **kwargs)

    def _ask_batch_when_ready(self, questions: list[str], k: int | None, **kwargs: Any) -> list[Answer]:
        return self._when_ready(self.pipeline.ask_batch, questions, k, **kwargs)

    async def open_stream(self, question: str, options: AskOptions, method: str | None,
                          history: list[dict] | None = None) -> tuple[list, Ticket, Iterator]:
        """Admit, retrieve (errors surface here, before any response is sent), and return the
        passages with the ticket and the rest of `Pipeline.stream` (see `events_after`)."""
        ticket = self.queue.admit()
        try:
            await ticket.start()
            events = self.pipeline.stream(question, options.k, filters=options.filters, method=method,
                                          retriever=options.retriever, history=history)
            _, passages = await run_in_threadpool(self._when_ready, next, events)
        except BaseException:
            ticket.release()
            raise
        return passages, ticket, events

    async def events_after(self, events: Iterator, ticket: Ticket) -> AsyncIterator[tuple[str, Any]]:
        """The ("token", str) ... ("answer", Answer) events, each pulled in a worker thread."""
        try:
            while (item := await run_in_threadpool(next, events, None)) is not None:
                yield item
        finally:
            events.close()
            ticket.release()


def unprocessable(loc: list[str], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so clients parse one format."""
    return HTTPException(422, [{"type": "value_error", "loc": loc, "msg": message}])


def event_stream(body: AsyncIterator[bytes], ticket: Ticket) -> StreamingResponse:
    """A server-sent-event response, unbuffered; its queue ticket is released when it ends."""
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                             background=BackgroundTask(ticket.release))
