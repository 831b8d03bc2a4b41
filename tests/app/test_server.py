"""The HTTP API over a small real collection, driven through plain HTTP (FastAPI's TestClient).

One app per module (the reader loads once, on the first question); tests marked slow are the
ones that run the real SmolLM2 reader.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from rearqa.app.server import create_app
from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig
from rearqa.retriever.docstore import Docstore
from rearqa.types import Answer

DATA = Path(__file__).parents[1] / "data"
TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def pipe(scratch_home):
    config = PipelineConfig(retriever=RetrieverConfig(collection="api"), reader=ReaderConfig(max_new_tokens=12), k=2)
    pipe = Pipeline(config, home=scratch_home)
    pipe.collection.add_paths([DATA / "mini_corpus.jsonl"], progress=False)
    return pipe


@pytest.fixture(scope="module")
def app(pipe):
    return create_app(pipe, token=TOKEN, max_upload_bytes=UPLOAD_LIMIT, warm=False)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, headers=AUTH) as client:
        yield client


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a text/event-stream body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


# -- no reader needed ---------------------------------------------------------------------------
def test_health_is_open_and_reports_the_collection(app, client):
    with TestClient(app) as anonymous:  # no token: health stays open
        body = anonymous.get("/health").json()
    assert body["status"] == "ready" and body["collection"] == "api"
    assert body["chunks"] == 6 and body["model"] == "smollm2-135m-instruct"
    assert body["queue"] == {"in_flight": 0, "waiting": 0, "max_in_flight": 1, "max_waiting": 8}


def test_token_is_required_when_configured(app, client):
    anonymous = TestClient(app)
    assert anonymous.get("/documents").status_code == 401
    wrong = anonymous.get("/documents", headers={"Authorization": "Bearer nope-nope-nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert anonymous.post("/ask", json={"question": "x"}).status_code == 401
    assert anonymous.get("/v1/models").status_code == 401
    assert client.get("/documents").status_code == 200
    assert anonymous.get("/openapi.json").status_code == 200 and anonymous.get("/docs").status_code == 200


@pytest.mark.parametrize("body, where", [
    ({"question": "   "}, "question"),
    ({"question": ""}, "question"),
    ({"question": "x" * 2001}, "question"),
    ({"question": "q", "k": 0}, "k"),
    ({"question": "q", "k": True}, "k"),
    ({"question": "q", "k": "2"}, "k"),
    ({"question": "q", "retriever": "grep"}, "retriever"),
    ({"question": "q", "method": "magic"}, "method"),
    ({"question": "q", "method": "rear"}, "method"),  # no trained checkpoint configured: not offered
    ({"question": "q", "colour": "red"}, "colour"),
    ({}, "question"),
])
def test_bad_questions_are_422_naming_the_field(client, body, where):
    response = client.post("/ask", json=body)
    assert response.status_code == 422
    assert where in [str(part) for error in response.json()["detail"] for part in error["loc"]]


@pytest.mark.parametrize("raw", [
    '{"question": "\\ud800 who?"}',  # a lone surrogate: legal JSON, not text
    '{"question": "who?", "filters": {"tags": "\\ud800"}}',
    '{"question": "who?", "filters": {"tags": []}}',
    '{"question": "who?", "filters": {"t\u00e4gs": "x"}}',
    '{"question": "who?", "filters": {"year": 1e999}}',
])
def test_malformed_text_and_filters_are_422_not_500(client, raw):
    response = client.post("/ask", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_unknown_query_parameters_are_refused(client):
    assert client.get("/documents", params={"lmit": 5}).status_code == 422


def test_a_bad_filter_is_422_naming_the_filter(client):
    response = client.post("/ask", json={"question": "Who wrote Hamlet?", "filters": {"bad key!": "x"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "filters", "bad key!"]


@pytest.mark.parametrize("name, status", [
    ("../evil.txt", 400), ("..", 400), ("a/b.txt", 400), ("a\\b.txt", 400), (".hidden.txt", 400),
    ("/etc/passwd.txt", 400), ("", 422),  # no name: not a file part at all ("notes.exe", 415), ("noext", 415),
])
def test_odd_file_names_are_refused(client, name, status):
    response = client.post("/documents", files={"file": (name, b"some text", "text/plain")})
    assert response.status_code == status, response.text


def test_oversize_uploads_are_413(client):
    # over the body limit: refused from Content-Length before the body is read ...
    big = client.post("/documents", files={"file": ("big.txt", b"a " * UPLOAD_LIMIT, "text/plain")})
    assert big.status_code == 413
    # ... and just over the file limit (body within the multipart slack): refused by the route
    edge = client.post("/documents", files={"file": ("edge.txt", b"a" * (UPLOAD_LIMIT + 1), "text/plain")})
    assert edge.status_code == 413 and "upload limit" in edge.json()["detail"]
    # ... and without a Content-Length (chunked): refused once the bytes received pass the limit
    def chunked():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="chunked.txt"\r\n\r\n'
        yield from (b"a" * 1024 for _ in range(2 * UPLOAD_LIMIT // 1024))
        yield b"\r\n--x--\r\n"

    streamed = client.post("/documents", content=chunked(),
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413 and streamed.request.headers["transfer-encoding"] == "chunked"
    listed = json.dumps(client.get("/documents").json())
    assert "big.txt" not in listed and "chunked.txt" not in listed


def test_a_file_with_no_text_is_422_and_leaves_nothing(client, pipe):
    response = client.post("/documents", files={"file": ("empty.md", b"   \n", "text/markdown")})
    assert response.status_code == 422 and "no text found" in json.dumps(response.json())
    assert not (pipe.collection.path / "uploads" / "empty.md").exists()


def test_documents_are_paginated_and_unknown_ids_are_404(client):
    first = client.get("/documents", params={"limit": 4}).json()
    rest = client.get("/documents", params={"offset": 4, "limit": 4}).json()
    assert first["total"] == rest["total"] >= 6 and len(first["documents"]) == 4
    assert first["documents"][0]["id"] == "hamlet" and first["documents"][0]["chunks"] == 1
    ids = [d["id"] for d in first["documents"] + rest["documents"]]
    assert len(ids) == len(set(ids))
    assert client.get("/documents", params={"limit": 0}).status_code == 422
    assert client.delete("/documents/no-such-doc").status_code == 404


@pytest.mark.parametrize("settings, match", [({"token": "short"}, "at least 8 characters"),
                                             ({"max_in_flight": 0}, "max_in_flight=0"),
                                             ({"max_queue": -1}, "max_queue=-1"),
                                             ({"max_upload_bytes": 0}, "max_upload_bytes=0")])
def test_bad_server_settings_are_refused_by_name(pipe, settings, match):
    from rearqa.config_errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        create_app(pipe, warm=False, **settings)


class GatedPipeline:
    """The pipeline with `ask` held at a gate: a test decides when the reader may go on."""

    def __init__(self, pipe):
        self.pipe, self.entered, self.release = pipe, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def ask(self, question, k=None, **kwargs):
        self.entered.set()
        assert self.release.wait(30), "the test never opened the gate"
        return Answer(question, "gated")


def test_a_full_queue_is_429_with_retry_after_at_once(pipe):
    gated = GatedPipeline(pipe)
    app = create_app(gated, max_in_flight=1, max_queue=0, warm=False)
    results = []
    with TestClient(app) as client:
        first = threading.Thread(target=lambda: results.append(client.post("/ask", json={"question": "one"})))
        first.start()
        assert gated.entered.wait(30)
        refused = client.post("/ask", json={"question": "two"})  # returns at once, no hang
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.headers["connection"] == "close"  # no stale keep-alive after the wait
        assert "busy" in refused.json()["detail"]
        assert client.get("/health").json()["queue"]["in_flight"] == 1
        gated.release.set()
        first.join(30)
        assert results[0].status_code == 200 and results[0].json()["text"] == "gated"
        assert client.post("/ask", json={"question": "three"}).status_code == 200  # the slot came back
        assert client.get("/health").json()["queue"] == {"in_flight": 0, "waiting": 0, "max_in_flight": 1,
                                                         "max_waiting": 0}


def test_models_are_listed_openai_style(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["rearqa", "rearqa/rag", "rearqa/closed-book"]
    unknown = client.post("/v1/chat/completions",
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404 and "rearqa" in unknown.json()["detail"]
    last_not_user = client.post("/v1/chat/completions",
                                json={"model": "rearqa", "messages": [{"role": "assistant", "content": "hi"}]})
    assert last_not_user.status_code == 422


def test_the_chat_ui_hook_mounts_the_gradio_blocks(pipe):
    from rearqa.app.server import mount_ui
    from rearqa.config_errors import ConfigError

    app = create_app(pipe, warm=False)
    mount_ui(app, pipe)
    client = TestClient(app)
    assert client.get("/chat/").status_code == 200
    front = client.get("/", follow_redirects=False)  # the front page is the chat
    assert front.status_code == 307 and front.headers["location"] == "/chat/"
    with pytest.raises(ConfigError, match="token"):
        mount_ui(create_app(pipe, token=TOKEN, warm=False), pipe)


# -- the real reader ----------------------------------------------------------------------------
@pytest.mark.slow
def test_ask_answers_with_citations(client, one_thread):
    response = client.post("/ask", json={"question": "Who wrote Hamlet?", "k": 1})
    assert response.status_code == 200
    answer = response.json()
    assert "shakespeare" in answer["text"].lower() and answer["method"] == "rag"
    assert answer["abstained"] is False and answer["from_own_knowledge"] is False
    cited = answer["citations"][0]
    assert cited["passage"]["id"] == "hamlet" and cited["passage"]["title"] == "Hamlet"
    assert set(cited) == {"passage", "relevance", "judgment", "answer", "probability"}
    assert set(cited["passage"]) >= {"id", "title", "text", "source", "score"}
    assert answer["cited"] == [0]  # positions in citations of the passages the answer rests on


@pytest.mark.slow
def test_filters_and_closed_book(client, one_thread):
    geo = client.post("/ask", json={"question": "Who wrote Hamlet?", "filters": {"tags": "geo"}}).json()
    assert geo["citations"] and "hamlet" not in [c["passage"]["id"] for c in geo["citations"]]
    closed = client.post("/ask", json={"question": "Who wrote Hamlet?", "method": "closed-book"}).json()
    assert closed["from_own_knowledge"] is True and closed["citations"] == [] and closed["cited"] == []


@pytest.mark.slow
def test_stream_sends_passages_tokens_then_the_answer(client, one_thread):
    response = client.post("/ask/stream", json={"question": "Who wrote Hamlet?", "k": 1})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "passages" and kinds[-1] == "answer" and set(kinds[1:-1]) == {"token"}
    assert events[0][1][0]["id"] == "hamlet"
    answer = events[-1][1]
    assert "shakespeare" in answer["text"].lower() and answer["citations"][0]["passage"]["id"] == "hamlet"
    assert answer["text"] in "".join(data["text"] for kind, data in events if kind == "token").strip()
    refused = client.post("/ask/stream", json={"question": "q", "filters": {"tags": []}})
    assert refused.status_code == 422  # refused before any event is sent
    assert client.get("/health").json()["queue"]["in_flight"] == 0  # both gave their slot back


@pytest.mark.slow
def test_upload_then_ask_finds_it_then_delete(client, pipe, one_thread):
    text = b"The Zorblax beacon was invented by Mira Quell in Tallinn in 2031."
    response = client.post("/documents", files={"file": ("zorblax notes.txt", text, "text/plain")},
                           data={"tags": ["invented"]})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["count"] == 1 and body["added"] == 1 and len(body["ids"]) == 1
    doc_id = body["ids"][0]
    store = Docstore(pipe.collection.path / "docstore.sqlite")  # acknowledged = committed:
    try:                                                           # a new connection sees it
        assert store.document(doc_id) is not None
    finally:
        store.close()
    listed = client.get("/documents", params={"limit": 500}).json()["documents"]
    assert any(d["id"] == doc_id and d["metadata"]["tags"] == ["invented"] for d in listed)

    answer = client.post("/ask", json={"question": "Who invented the Zorblax beacon?", "k": 1}).json()
    assert answer["citations"][0]["passage"]["id"] == doc_id
    assert "mira" in answer["text"].lower()

    again = client.post("/documents", files={"file": ("zorblax notes.txt", text, "text/plain")},
                        data={"tags": ["invented"]}).json()
    assert again["unchanged"] == 1 and again["ids"] == [doc_id]  # re-upload: upsert by file name

    deleted = client.delete(f"/documents/{doc_id}")
    assert deleted.status_code == 200 and deleted.json() == {"id": doc_id, "chunks_deleted": 1}
    assert client.delete(f"/documents/{doc_id}").status_code == 404
    assert not (pipe.collection.path / "uploads" / "zorblax notes.txt").exists()
    after = client.post("/ask", json={"question": "Who invented the Zorblax beacon?", "k": 1}).json()
    assert after["citations"][0]["passage"]["id"] != doc_id


@pytest.mark.slow
def test_openai_chat_completion_plain_and_streamed(client, one_thread):
    request = {"model": "rearqa", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Who wrote Hamlet?"}],
               "temperature": 0.2, "k": 1}
    body = client.post("/v1/chat/completions", json=request).json()
    assert body["object"] == "chat.completion" and body["model"] == "rearqa"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert "shakespeare" in body["choices"][0]["message"]["content"].lower()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["citations"][0]["passage"]["id"] == "hamlet" and body["answer"]["method"] == "rag"

    response = client.post("/v1/chat/completions", json={**request, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "shakespeare" in text.lower()
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["citations"][0]["passage"]["id"] == "hamlet"


@pytest.mark.slow
def test_openai_chat_uses_earlier_turns_as_history(client, one_thread):
    request = {"model": "rearqa/closed-book", "messages": [
        {"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}]}
    body = client.post("/v1/chat/completions", json=request).json()
    assert body["answer"]["method"] == "closed-book" and body["answer"]["question"] == "What is my name?"
    assert "ada" in body["choices"][0]["message"]["content"].lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_rearqa_serve_runs_uvicorn_on_loopback(pipe, scratch_home, tmp_path):
    """The `serve` command as a user starts it: token from the environment, ready on /health,
    answers streamed over a real socket, stopped by SIGTERM."""
    import httpx

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"k": 1, "retriever": {"collection": "api"}, "reader": {"max_new_tokens": 8}}))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rearqa.app.cli", "serve", "--port", str(port),
                               "--config", str(config), "--home", str(scratch_home)],
                              env={**os.environ, "REARQA_API_TOKEN": TOKEN, "REARQA_LOG": "WARNING"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/health").json()["status"] == "ready":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.5)
        assert httpx.get(f"{base}/documents").status_code == 401
        with httpx.stream("POST", f"{base}/ask/stream", json={"question": "Who wrote Hamlet?"},
                          headers=AUTH, timeout=120) as response:
            events = sse_events(response.read().decode())
        assert events[0][0] == "passages" and events[-1][0] == "answer"
        assert events[-1][1]["citations"][0]["passage"]["id"] == "hamlet"
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def fuzz_schema(pipe, scratch_home):
    """The schema of an app over a collection of its own (fuzzed uploads and deletes must not
    touch the other tests' documents), sharing the module's reader."""
    schemathesis = pytest.importorskip("schemathesis")
    config = PipelineConfig(retriever=RetrieverConfig(collection="fuzz"), reader=pipe.config.reader, k=2)
    fuzz_pipe = Pipeline(config, home=scratch_home)
    fuzz_pipe._readers = pipe._readers  # one SmolLM2 in memory, not two
    fuzz_pipe.collection.add_paths([DATA / "mini_corpus.jsonl"], progress=False)
    app = create_app(fuzz_pipe, token=TOKEN, max_upload_bytes=UPLOAD_LIMIT, warm=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.update(headers=AUTH)  # schemathesis's own, so negative cases may drop it
    return schema


@pytest.mark.slow
def test_fuzz_the_openapi_schema(fuzz_schema, one_thread):
    """Generated requests, valid and invalid, over every operation: never a 500, and responses
    as the schema says (scripts/reliability/fuzz.py runs a thousand and more)."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    cases = st.one_of(fuzz_schema.as_strategy(GenerationMode.POSITIVE),
                      fuzz_schema.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        # An upload's suffix and the chat's last-message-is-the-user's rule are beyond the
        # schema: schema-valid requests breaking them get a 4xx on purpose.
        semantic = (case.method, case.path) in {("POST", "/documents"), ("POST", "/v1/chat/completions")}
        case.call_and_validate(excluded_checks=[positive_data_acceptance] if semantic else [])

    check()


def test_a_huge_rejected_question_is_not_echoed_back_whole(client):
    question = "why " * 25_000  # 100k characters, over the question limit
    response = client.post("/ask", json={"question": question})
    assert response.status_code == 422
    assert len(response.content) < 2_000
    echoed = [e["input"] for e in response.json()["detail"] if "input" in e]
    assert echoed and all("(100000 characters)" in e for e in echoed if isinstance(e, str))
