"""One thread that owns vLLM's `LLMEngine` and serves every caller with continuous batching.

vLLM's engine batches whatever requests it holds at each step: a request added while others are
decoding joins the next step (continuous batching, the idea of Orca, Yu et al., OSDI 2022, which
vLLM implements). `vllm.LLM.generate`, though, drives the engine until ITS requests finish, so
two threads calling it would step one engine at once, and a server that serialises the calls
(as rearqa did) reads one request at a time while a stream blocks everyone behind it.

`EngineLoop` is the one place that touches the engine: any thread `submit`s token-id prompts
with their `SamplingParams` and gets a `Submission` back; the loop thread adds them between
steps, steps while anything is unfinished, and puts each `RequestOutput` on the queue of the
request it belongs to (a stream asks for DELTA outputs and reads them as they come; a batch asks
for the final ones). A caller that stops reading aborts its requests. Only vLLM's public API is
used (`LLMEngine.add_request / step / abort_request / has_unfinished_requests`).

An error from `add_request` (a prompt too long, a bad parameter) goes to that request's caller;
an error from `step` (the engine process died) goes to every caller waiting and to every later
`submit`, since the engine cannot serve again.
"""
from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

_STOP = object()


@dataclass
class _Add:
    request_id: str
    prompt_ids: list[int]
    params: object
    outputs: queue.SimpleQueue


@dataclass
class _Abort:
    request_ids: list[str]


@dataclass
class Submission:
    """The requests of one `submit` call: their ids (in prompt order) and the queue their
    `RequestOutput`s (or an exception) arrive on."""

    request_ids: list[str]
    outputs: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)


class EngineClosed(RuntimeError):
    """The engine loop was stopped (engine closed) or its engine failed."""


class EngineLoop:
    """The thread that adds, steps and dispatches for one `LLMEngine` (see the module docstring)."""

    def __init__(self, engine, name: str = "rearqa-vllm-loop", lora_request=None) -> None:
        """lora_request: a `vllm.lora.request.LoRARequest` added with every request (the engine's
        one adapter, VllmEngine), or None."""
        self._engine = engine
        self._add_kwargs = {"lora_request": lora_request} if lora_request is not None else {}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sinks: dict[str, queue.SimpleQueue] = {}  # request id -> its caller's queue (loop thread only)
        self._ids = itertools.count()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- any thread

    def submit(self, prompts: Sequence[list[int]], params) -> Submission:
        """Queue `prompts` (token ids) with `params` (one SamplingParams, or one per prompt)."""
        if self._failure is not None:
            raise EngineClosed(f"the vLLM engine cannot serve: {self._failure}") from self._failure
        per_prompt = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(per_prompt)} SamplingParams")
        submission = Submission([f"rearqa-{next(self._ids)}" for _ in prompts])
        for request_id, ids, p in zip(submission.request_ids, prompts, per_prompt):
            self._inbox.put(_Add(request_id, list(ids), p, submission.outputs))
        return submission

    def abort(self, request_ids: list[str]) -> None:
        self._inbox.put(_Abort(list(request_ids)))

    def results(self, submission: Submission) -> list:
        """The finished `RequestOutput` of each prompt of `submission`, in prompt order."""
        finished: dict[str, object] = {}
        try:
            while len(finished) < len(submission.request_ids):
                out = self._next(submission)
                if out.finished:
                    finished[out.request_id] = out
        finally:
            if len(finished) < len(submission.request_ids):  # an error or the caller gave up
                self.abort([r for r in submission.request_ids if r not in finished])
        return [finished[r] for r in submission.request_ids]

    def outputs(self, submission: Submission) -> Iterator:
        """Each `RequestOutput` of a one-prompt submission as the engine steps make it; aborts
        the request when the caller stops reading early."""
        done = False
        try:
            while not done:
                out = self._next(submission)
                done = out.finished
                yield out
        finally:
            if not done:
                self.abort(submission.request_ids)

    def _next(self, submission: Submission):
        item = submission.outputs.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout: float = 30.0) -> None:
        """Stop the loop (requests still running get EngineClosed); idempotent."""
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join(timeout)

    # -------------------------------------------------------------- the loop thread

    def _run(self) -> None:
        try:
            while True:
                # Block for work when the engine is idle; otherwise take what has arrived and step.
                item = self._inbox.get() if not self._sinks else self._take_nowait()
                while item is not None:
                    if item is _STOP:
                        raise EngineClosed("the vLLM engine was closed")
                    self._apply(item)
                    item = self._take_nowait()
                if self._sinks and self._engine.has_unfinished_requests():
                    self._dispatch(self._engine.step())
                elif self._sinks:  # the engine holds none of them: say so rather than hang
                    self._fail_all(RuntimeError("vLLM dropped requests without finishing them"))
        except BaseException as exc:  # every waiting caller gets it; later submits too
            self._failure = exc
            self._fail_all(exc)
            while (item := self._take_nowait()) is not None:
                if isinstance(item, _Add):
                    item.outputs.put(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for sink in self._sinks.values():
            sink.put(exc)
        self._sinks.clear()

    def _take_nowait(self):
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _apply(self, item) -> None:
        if isinstance(item, _Abort):
            live = [r for r in item.request_ids if self._sinks.pop(r, None) is not None]
            if live:
                self._engine.abort_request(live)
            return
        try:
            self._engine.add_request(item.request_id, {"prompt_token_ids": item.prompt_ids}, item.params,
                                     **self._add_kwargs)
        except Exception as exc:  # this request's fault (too long, bad params): its caller's error
            item.outputs.put(exc)
            return
        self._sinks[item.request_id] = item.outputs

    def _dispatch(self, step_outputs: list) -> None:
        for out in step_outputs:
            sink = self._sinks.get(out.request_id)
            if sink is None:  # aborted meanwhile
                continue
            sink.put(out)
            if out.finished:
                del self._sinks[out.request_id]
