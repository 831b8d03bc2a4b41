"""Micro-batching of POST /ask (app/batching.py): questions that wait together are read in one
`Pipeline.ask_batch` call, grouped by what they share; errors reach every request of their batch;
one bad question is refused alone. A stand-in pipeline records the calls (no model); the real
engines under concurrency are tested in test_concurrent_asks.py (slow)."""
import asyncio
import json
import threading

import pytest
from fastapi.testclient import TestClient

from rearqa.app.batching import AskBatcher
from rearqa.app.server import create_app
from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.retriever import FilterError
from rearqa.types import Answer


class RecordingAskBatch:
    """An `ask_batch` that records each call; the first call waits for `release`."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, questions, k=None, **kwargs):
        self.calls.append((list(questions), kwargs))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30), "the test never opened the gate"
        if kwargs.get("filters") == {"tags": "broken"}:
            raise FilterError("no such tag")
        return [Answer(q, f"answer to {q}", method=kwargs.get("method") or "rag") for q in questions]


async def _gathered(batcher: AskBatcher, record: RecordingAskBatch, later: list[dict]) -> list:
    first = asyncio.ensure_future(batcher.ask("first"))
    await asyncio.to_thread(record.entered.wait, 30)
    rest = [asyncio.ensure_future(batcher.ask(**kw)) for kw in later]
    await asyncio.sleep(0.05)  # the later questions are all waiting now
    record.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_questions_waiting_together_are_read_in_one_call():
    record = RecordingAskBatch()
    batcher = AskBatcher(record, max_batch=8, max_batches=1)
    answers = asyncio.run(_gathered(batcher, record, [{"question": f"q{i}"} for i in range(5)]))
    assert [a.text for a in answers] == ["answer to first"] + [f"answer to q{i}" for i in range(5)]
    assert [c[0] for c in record.calls] == [["first"], [f"q{i}" for i in range(5)]]
    assert batcher.batch_sizes == {1: 1, 5: 1}


def test_a_batch_holds_at_most_max_batch_and_one_kind_of_question():
    record = RecordingAskBatch()
    batcher = AskBatcher(record, max_batch=2, max_batches=1)
    later = [{"question": "a"}, {"question": "b", "method": "closed-book"}, {"question": "c"},
             {"question": "d"}, {"question": "e", "method": "closed-book"}]
    answers = asyncio.run(_gathered(batcher, record, later))
    assert [a.question for a in answers] == ["first", "a", "b", "c", "d", "e"]
    assert [(qs, kw["method"]) for qs, kw in record.calls] == [
        (["first"], None), (["a", "c"], None), (["b", "e"], "closed-book"), (["d"], None)]


def test_an_error_of_a_batch_reaches_each_of_its_requests_only():
    record = RecordingAskBatch()
    batcher = AskBatcher(record, max_batch=8, max_batches=1)
    later = [{"question": "x", "filters": {"tags": "broken"}}, {"question": "y"},
             {"question": "z", "filters": {"tags": "broken"}}]
    first, x, y, z = asyncio.run(_gathered(batcher, record, later))
    assert first.text == "answer to first" and y.text == "answer to y"
    assert isinstance(x, FilterError) and isinstance(z, FilterError)


class BatchedPipeline(Pipeline):
    """A pipeline whose ask_batch is a RecordingAskBatch (nothing is loaded)."""

    def __init__(self, home) -> None:
        super().__init__(PipelineConfig(), home=home)
        self.record = RecordingAskBatch()
        self.record.entered.set()  # no gate for the server test
        self.record.release.set()

    def ask_batch(self, questions, k=None, **kwargs):
        return self.record(questions, k, **kwargs)


def test_the_server_batches_asks_and_refuses_a_bad_question_alone(tmp_path):
    pipe = BatchedPipeline(tmp_path)
    app = create_app(pipe, max_batch=8, max_queue=4, warm=False)
    questions = [f"question {i}" for i in range(6)] + ["bad \ud800 question"]
    results: dict[str, object] = {}
    with TestClient(app) as client:
        queue = app.state.rearqa.queue  # (GET /health would open the collection: not here)
        assert (queue.max_in_flight, queue.max_waiting) == (16, 4)  # max_batch x 2 batches at once

        def ask(question: str) -> None:
            # json.dumps escapes the lone surrogate as "\ud800" (valid JSON that is no Unicode text)
            results[question] = client.post("/ask", content=json.dumps({"question": question}),
                                            headers={"Content-Type": "application/json"})

        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        chat = client.post("/v1/chat/completions",
                           json={"model": "rearqa", "messages": [{"role": "user", "content": "via openai"}]})
    for q in questions[:-1]:
        assert results[q].status_code == 200 and results[q].json()["text"] == f"answer to {q}"
    bad = results[questions[-1]]
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "question"]
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "answer to via openai"
    asked = [q for call, _ in pipe.record.calls for q in call]
    assert sorted(asked) == sorted(questions[:-1] + ["via openai"])  # the bad one never reached a batch


@pytest.mark.parametrize("settings, match", [({"max_batch": 0}, "max_batch=0"),
                                             ({"max_batch": 4, "max_in_flight": 0}, "max_in_flight=0")])
def test_bad_batch_settings_are_refused_by_name(tmp_path, settings, match):
    from rearqa.config_errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        create_app(BatchedPipeline(tmp_path), warm=False, **settings)


def test_the_readers_are_stopped_when_the_server_stops(tmp_path):
    """uvicorn runs the app's shutdown on SIGTERM; a vLLM reader's engine processes must stop
    with it (they outlived the server before)."""
    pipe = BatchedPipeline(tmp_path)
    closed = []
    pipe.close_readers = lambda: closed.append(True)
    with TestClient(create_app(pipe, max_batch=4, warm=False)) as client:
        assert client.post("/ask", json={"question": "q"}).status_code == 200
        assert not closed
    assert closed == [True]
