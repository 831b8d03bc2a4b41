"""Many requests at once on the real reader, on both engines (issue 17): POST /ask batched,
/ask/stream and the OpenAI stream running beside them, each answer and each stream holding only
its own question's tokens. Slow: the real SmolLM2 in fp32 (greedy texts do not depend on how the
requests were batched), and on vLLM the engine's start (a minute or two on the shared machine).
The chat (Gradio) streams through the same `Pipeline.stream` as /ask/stream."""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rearqa.app.server import create_app
from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig

DATA = Path(__file__).parents[1] / "data"
QUESTIONS = ["Who wrote Hamlet?", "What is the capital of France?", "Who painted the Mona Lisa?",
             "What is the highest mountain above sea level?"]


@pytest.fixture(scope="module", params=["hf", "vllm"])
def served(request, scratch_home):
    engine = request.param
    config = PipelineConfig(retriever=RetrieverConfig(collection=f"concurrent-{engine}"), k=2,
                            reader=ReaderConfig(engine=engine, dtype="float32", max_new_tokens=12))
    pipe = Pipeline(config, home=scratch_home)
    pipe.collection.add_paths([DATA / "mini_corpus.jsonl"], progress=False)
    if engine == "vllm":
        from rearqa.reader.engines.vllm_engine import VllmStartError

        try:
            pipe.reader  # noqa: B018 (starts vLLM)
        except VllmStartError as exc:
            pytest.skip(f"vLLM could not start on this machine: {exc}")
    with TestClient(create_app(pipe, max_batch=8, warm=False)) as client:
        yield client  # leaving it shuts the app down, which stops the readers (vLLM's processes)


def sse(text: str) -> list[tuple[str, dict | str]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields["data"]
        events.append((fields.get("event", "message"), data if data == "[DONE]" else json.loads(data)))
    return events


def ask(client, question):
    response = client.post("/ask", json={"question": question})
    assert response.status_code == 200, response.text
    return response.json()


def ask_stream(client, question):
    response = client.post("/ask/stream", json={"question": question})
    assert response.status_code == 200, response.text
    events = sse(response.text)
    tokens = "".join(data["text"] for kind, data in events if kind == "token")
    return tokens, events[-1][1]


def openai_stream(client, question):
    response = client.post("/v1/chat/completions", json={
        "model": "rearqa", "stream": True, "messages": [{"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    chunks = [data for _, data in sse(response.text) if data != "[DONE]"]
    tokens = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    return tokens, chunks[-1]["answer"]


@pytest.mark.slow
def test_simultaneous_asks_and_streams_each_get_their_own_answer(served, one_thread):
    alone = {q: ask(served, q)["text"] for q in QUESTIONS}  # one at a time first
    assert len(set(alone.values())) == len(QUESTIONS)  # different answers: a mix-up would show
    with ThreadPoolExecutor(3 * len(QUESTIONS)) as pool:
        asks = {q: pool.submit(ask, served, q) for q in QUESTIONS}
        streams = {q: pool.submit(ask_stream, served, q) for q in QUESTIONS}
        chats = {q: pool.submit(openai_stream, served, q) for q in QUESTIONS}
        for q in QUESTIONS:
            assert asks[q].result(600)["text"] == alone[q]
            for tokens, answer in (streams[q].result(600), chats[q].result(600)):
                assert answer["question"] == q and answer["text"] == alone[q]
                assert tokens.strip().splitlines()[0].strip() == alone[q]  # its own tokens only
    assert served.app.state.rearqa.batcher.batch_sizes  # the asks went through the batcher
    assert served.get("/health").json()["queue"]["in_flight"] == 0  # every slot came back
