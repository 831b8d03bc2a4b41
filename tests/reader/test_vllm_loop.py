"""The engine loop's mechanics on a stand-in engine (no vLLM): requests from many threads are
added between steps and batched, outputs reach only their own caller, an abandoned request is
aborted, and errors reach the callers they belong to. The real engine is tested in
test_vllm_engine.py (concurrent streams and calls, marked slow)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from rearqa.reader.engines.vllm_loop import EngineClosed, EngineLoop


@dataclass
class Out:
    request_id: str
    token: int
    finished: bool


class CountingEngine:
    """Each request "generates" its prompt's tokens one per step; all live requests step together."""

    def __init__(self, fail_step_at: int | None = None, step_s: float = 0.0) -> None:
        self.live: dict[str, list[int]] = {}
        self.steps: list[set[str]] = []  # the requests stepped together, per step
        self.aborted: list[str] = []
        self.fail_step_at = fail_step_at
        self.step_s = step_s

    def add_request(self, request_id, prompt, params):
        if params == "bad":
            raise ValueError("bad params")
        self.live[request_id] = list(prompt["prompt_token_ids"])

    def abort_request(self, request_ids):
        for r in request_ids:
            self.aborted.append(r)
            self.live.pop(r, None)

    def has_unfinished_requests(self):
        return bool(self.live)

    def step(self):
        if self.fail_step_at is not None and len(self.steps) == self.fail_step_at:
            raise RuntimeError("engine process died")
        self.steps.append(set(self.live))
        time.sleep(self.step_s)
        outs = []
        for r, tokens in list(self.live.items()):
            outs.append(Out(r, tokens.pop(0), not tokens))
            if not tokens:
                del self.live[r]
        return outs


def test_results_come_back_in_prompt_order_each_to_its_caller():
    engine = CountingEngine()
    loop = EngineLoop(engine)
    results: dict[int, list] = {}

    def call(n: int) -> None:
        outs = loop.results(loop.submit([[n] * (n + 1), [100 + n]], None))
        results[n] = [(o.token, o.finished) for o in outs]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    loop.close()
    assert results == {n: [(n, True), (100 + n, True)] for n in range(6)}
    assert max(len(s) for s in engine.steps) > 1  # requests of different callers stepped together


def test_every_request_carries_the_loops_lora_request():
    class LoraEngine(CountingEngine):
        def __init__(self) -> None:
            super().__init__()
            self.lora: list = []

        def add_request(self, request_id, prompt, params, lora_request=None):
            self.lora.append(lora_request)
            super().add_request(request_id, prompt, params)

    engine = LoraEngine()
    loop = EngineLoop(engine, lora_request="the adapter")
    loop.results(loop.submit([[1, 2], [3]], None))
    list(loop.outputs(loop.submit([[4, 5]], None)))
    loop.close()
    assert engine.lora == ["the adapter"] * 3


def test_a_stream_sees_only_its_own_outputs_and_others_run_beside_it():
    engine = CountingEngine()
    loop = EngineLoop(engine)
    stream = loop.outputs(loop.submit([[1, 2, 3, 4]], None))
    assert next(stream).token == 1  # the stream is open and paused here
    other = loop.results(loop.submit([[7, 8]], None))  # served while the stream waits
    assert [o.token for o in other] == [8]
    assert [o.token for o in stream] == [2, 3, 4]
    loop.close()


def test_a_stream_the_caller_leaves_is_aborted():
    engine = CountingEngine(step_s=0.001)
    loop = EngineLoop(engine)
    stream = loop.outputs(loop.submit([list(range(100_000))], None))  # far longer than the test
    next(stream)
    stream.close()
    assert [o.token for o in loop.results(loop.submit([[5]], None))] == [5]  # still serving
    loop.close()
    assert len(engine.aborted) == 1


def test_a_bad_request_fails_alone():
    loop = EngineLoop(CountingEngine())
    with pytest.raises(ValueError, match="bad params"):
        loop.results(loop.submit([[1], [2]], [None, "bad"]))
    assert [o.token for o in loop.results(loop.submit([[3]], None))] == [3]
    loop.close()


def test_an_engine_failure_reaches_every_caller_and_later_ones():
    loop = EngineLoop(CountingEngine(fail_step_at=0))
    with pytest.raises(RuntimeError, match="engine process died"):
        loop.results(loop.submit([[1, 2]], None))
    with pytest.raises(EngineClosed, match="engine process died"):
        loop.submit([[1]], None)


def test_params_must_match_the_prompts():
    loop = EngineLoop(CountingEngine())
    with pytest.raises(ValueError, match="2 prompts but 1 SamplingParams"):
        loop.submit([[1], [2]], [None])
    loop.close()
