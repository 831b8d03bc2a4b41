"""Ingestion jobs: large uploads answered 202 and added in committed batches in the background,
over a real collection (SQLite docstore, FAISS, the MiniLM embedder) and the real HTTP app; no
reader is loaded. A job that a killed process left running reads `interrupted` after a restart.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rearqa
from rearqa.app.jobs import JOBS_FILE, JobSettings, JobStore
from rearqa.app.server import create_app
from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.batched_ingest import PARTIAL
from rearqa.retriever.config import RetrieverConfig

THRESHOLD = 1024  # bytes: larger uploads become jobs here
BATCH = 2  # chunks per committed batch


def long_text(words: int, first: str = "zqfirstx") -> bytes:
    return (first + " " + " ".join(f"w{i}" for i in range(words))).encode()


def records(n: int, tag: str) -> bytes:
    return "".join(json.dumps({"id": f"{tag}{i}", "text": f"Record {tag}{i} holds the token zq{tag}{i}x."}) + "\n"
                   for i in range(n)).encode()


def pipeline(home: Path, collection: str) -> Pipeline:
    config = PipelineConfig(retriever=RetrieverConfig(collection=collection), reader=ReaderConfig(), k=2)
    return Pipeline(config, home=home)


@pytest.fixture(scope="module")
def pipe(scratch_home):
    return pipeline(scratch_home, "jobs")


@pytest.fixture(scope="module")
def app(pipe):
    return create_app(pipe, warm=False, jobs=JobSettings(threshold_bytes=THRESHOLD, batch_chunks=BATCH,
                                                         max_running=1, max_waiting=1))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


def wait_until_ended(client, job_id: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s} s")


def upload(client, name: str, data: bytes):
    return client.post("/documents", files={"file": (name, data)})


# -- the store --------------------------------------------------------------------------------------
def test_the_store_keeps_jobs_and_marks_active_ones_interrupted_when_reopened(tmp_path):
    store = JobStore(tmp_path / JOBS_FILE)
    queued, running, done = store.create("a.txt"), store.create("b.txt"), store.create("c.txt")
    store.update(running["id"], state="running", chunks_done=4, chunks_total=10)
    store.update(done["id"], state="done", errors=["c.txt:2: bad line"], result={"count": 3})
    assert store.interrupted == 0 and queued["state"] == "queued" and queued["chunks_total"] is None
    store.close()
    again = JobStore(tmp_path / JOBS_FILE)
    assert again.interrupted == 2
    assert again.get(queued["id"])["state"] == again.get(running["id"])["state"] == "interrupted"
    assert again.get(running["id"])["chunks_done"] == 4 and again.get(running["id"])["finished_at"]
    assert again.get(done["id"])["state"] == "done" and again.get(done["id"])["result"] == {"count": 3}
    assert again.get(done["id"])["errors"] == ["c.txt:2: bad line"] and again.get("nope") is None
    with pytest.raises(ValueError, match="unknown job fields"):
        again.update(done["id"], colour="red")


def test_job_settings_are_checked():
    from rearqa.config_errors import ConfigError

    with pytest.raises(ConfigError, match="max_running=0"):
        JobSettings(max_running=0)
    with pytest.raises(ConfigError, match="threshold_bytes=-1"):
        JobSettings(threshold_bytes=-1)


# -- through the API ------------------------------------------------------------------------------
def test_a_small_upload_is_still_synchronous(client):
    response = upload(client, "small.txt", b"The Quarn bridge spans the Ossel river.")
    assert response.status_code == 201 and response.json()["count"] == 1


def test_a_large_upload_is_a_job_whose_progress_matches_the_committed_batches(app, client, pipe, batch_gate):
    jobs = app.state.rearqa.jobs
    # the job takes the write lock to write the file, for its plan, then once per batch: two batches
    gate = jobs.write_lock = batch_gate(entries=1 + 1 + 2)
    try:
        response = upload(client, "long notes.txt", long_text(1200))
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"/jobs/{job['id']}"
        # the reply is the job as submitted (how fast it comes: docs/reliability.md; no timing in tests)
        assert job["state"] == "queued" and job["chunks_done"] == 0 and job["chunks_total"] is None
        assert gate.waiting.wait(120), "the job never reached its third batch"
        mid = client.get(f"/jobs/{job['id']}").json()
        # the job stands still now: what it reports done is what the docstore holds, searchable
        source = str((pipe.collection.path / "uploads" / "long notes.txt").resolve())
        stored = pipe.collection.docstore.document_listing(0, 10, source=source)
        assert mid["state"] == "running" and mid["chunks_done"] == 2 * BATCH < mid["chunks_total"]
        assert stored[0]["chunks"] == mid["chunks_done"]
        assert mid["documents_total"] == 1 and mid["documents_done"] == 0  # one long document
        assert pipe.collection.retriever("bm25").search("zqfirstx", k=1)[0].id.startswith("long notes.txt@")
        assert pipe.collection.docstore.documents_of_source(source)[0].revision.startswith(PARTIAL)
    finally:
        gate.release_all()
        jobs.write_lock = app.state.rearqa.write_lock
    done = wait_until_ended(client, job["id"])
    assert done["state"] == "done" and done["errors"] == []
    assert done["chunks_done"] == done["chunks_total"] == done["result"]["count"] == done["result"]["chunks_added"]
    assert done["documents_done"] == done["documents_total"] == done["result"]["added"] == 1
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    listed = client.get("/documents", params={"limit": 500}).json()["documents"]
    assert any(d["id"] == done["result"]["ids"][0] and d["chunks"] == done["chunks_total"] for d in listed)
    assert not pipe.collection.docstore.documents_of_source(source)[0].revision.startswith(PARTIAL)


def test_documents_done_counts_whole_documents(client, pipe):
    response = upload(client, "records.jsonl", records(40, "r"))
    assert response.status_code == 202
    done = wait_until_ended(client, response.json()["id"])
    assert (done["state"], done["chunks_done"], done["documents_done"], done["documents_total"]) == ("done", 40, 40, 40)
    assert pipe.collection.retriever("bm25").search("zqr39x", k=1)[0].id == "r39"


def test_an_unknown_job_is_404_with_a_clear_message(client):
    response = client.get("/jobs/no-such-job")
    assert response.status_code == 404
    assert "no ingestion job has id 'no-such-job'" in response.json()["detail"]


def test_a_malformed_file_fails_its_job_and_keeps_what_was_acknowledged(client, pipe):
    first = upload(client, "kept.jsonl", records(30, "k"))
    assert wait_until_ended(client, first.json()["id"])["state"] == "done"
    before = pipe.collection.docstore.count_chunks()
    bad = upload(client, "kept.jsonl", b"{not json\n" * 200)  # the same file, now unreadable
    job = wait_until_ended(client, bad.json()["id"])
    assert job["state"] == "failed" and job["result"] is None
    assert job["errors"][0].startswith("kept.jsonl:1: ") and len(job["errors"]) == 201
    assert "kept because the file has errors" in job["errors"][-1]
    assert pipe.collection.docstore.count_chunks() == before  # nothing acknowledged was lost
    assert (pipe.collection.path / "uploads" / "kept.jsonl").read_bytes() == records(30, "k")  # put back
    assert pipe.collection.retriever("bm25").search("zqk7x", k=1)[0].id == "k7"
    new = upload(client, "never.jsonl", b"{not json\n" * 200)  # a new name: no file is kept
    assert wait_until_ended(client, new.json()["id"])["state"] == "failed"
    assert not (pipe.collection.path / "uploads" / "never.jsonl").exists()


def test_jobs_beyond_the_bound_are_refused_with_retry_after(app, client):
    lock = app.state.rearqa.write_lock
    with lock:  # the first job cannot finish, the second waits: the bound (1 + 1) is reached
        first = upload(client, "one.jsonl", records(20, "b"))
        second = upload(client, "two.jsonl", records(20, "c"))
        third = upload(client, "three.jsonl", records(20, "d"))
        assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
        assert int(third.headers["retry-after"]) >= 1 and "busy" in third.json()["detail"]
    assert wait_until_ended(client, second.json()["id"])["state"] == "done"
    assert upload(client, "three.jsonl", records(20, "d")).status_code == 202  # room again


def test_the_schema_documents_jobs(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/documents"]["post"]["responses"]
    assert post["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobOut")
    assert "201" in post and "/jobs/{job_id}" in schema["paths"]
    job = schema["components"]["schemas"]["JobOut"]["properties"]
    assert {"state", "chunks_done", "chunks_total", "documents_done", "documents_total", "errors"} <= set(job)
    assert job["state"]["enum"] == ["queued", "running", "done", "failed", "interrupted"]


# -- restart -----------------------------------------------------------------------------------------
CHILD = """
import sys, time
from pathlib import Path
from rearqa.app.jobs import JOBS_FILE, IngestJobs, JobSettings
from rearqa.retriever import Collection, RetrieverConfig
folder = Path(sys.argv[1])
collection = Collection(folder, RetrieverConfig())
jobs = IngestJobs(lambda: collection, folder / JOBS_FILE, JobSettings(batch_chunks=1))
print(jobs.submit("long.txt", Path(sys.argv[2]).read_bytes())["id"], flush=True)
time.sleep(600)
"""


def read_job(folder: Path, job_id: str) -> dict | None:
    """The job's row read raw (opening a JobStore would mark it interrupted)."""
    if not (folder / JOBS_FILE).exists():
        return None
    db = sqlite3.connect(f"file:{folder / JOBS_FILE}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT state, chunks_done FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        db.close()
    return {"state": row[0], "chunks_done": row[1]} if row else None


def test_a_job_cut_off_by_a_killed_server_reads_interrupted_after_restart(scratch_home, tmp_path):
    folder = scratch_home / "indexes" / "restart"
    text = tmp_path / "long.txt"
    text.write_bytes(long_text(8000))
    env = {**os.environ, "PYTHONPATH": str(Path(rearqa.__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(text)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        job_id = child.stdout.readline().strip()
        deadline = time.monotonic() + 180
        while (row := read_job(folder, job_id)) is None or row["chunks_done"] < 2:
            assert time.monotonic() < deadline and child.poll() is None, f"the job did not start: {row}"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)  # as a crash: no handler runs
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    cut = read_job(folder, job_id)
    assert cut["state"] == "running" and 2 <= cut["chunks_done"]

    restarted = create_app(pipeline(scratch_home, "restart"), warm=False,
                           jobs=JobSettings(threshold_bytes=THRESHOLD, batch_chunks=64))
    with TestClient(restarted) as client:
        job = client.get(f"/jobs/{job_id}").json()
        assert job["state"] == "interrupted" and job["chunks_done"] >= cut["chunks_done"]
        assert job["chunks_total"] > job["chunks_done"] and job["finished_at"] is not None
        store = restarted.state.rearqa.pipeline.collection.docstore
        (partial,) = store.documents_of_source(str((folder / "uploads" / "long.txt").resolve()))
        assert partial.revision.startswith(PARTIAL) and store.count_chunks() >= job["chunks_done"]
        # uploading the file again completes it: the half-written document is replaced
        again = client.post("/documents", files={"file": ("long.txt", text.read_bytes())})
        done = wait_until_ended(client, again.json()["id"])
        assert done["state"] == "done" and done["result"]["updated"] == 1
        assert store.count_chunks() == done["chunks_total"] == job["chunks_total"]
