"""Crash test of document ingest: kill -9 `rearqa serve` while an upload is in flight, restart, check.

    .venv/bin/python scripts/reliability/crash.py --trials 5 --save-kills 2 --out docs/results/reliability-crash.json

A real server over a scratch data home takes uploads back to back, each a JSONL file of
`--batch` (at most 100) documents, every document holding a unique token. By default every
upload is an ingestion job (the server runs with `--job-threshold-kb 0` and
`--job-batch-chunks --job-batch`): POST /documents answers 202, the client polls GET /jobs/{id},
and the documents a job reports done (`documents_done`, moved after each committed batch) are
acknowledged, batch by batch; the upload is done when the job is. With `--sync` the server keeps
its default threshold and the 201 reply to each (small) upload is the acknowledgement, as before
jobs existed. After at least 5 more finished uploads in a trial the server is killed with SIGKILL
part-way through the next upload (at a different point of it each trial; in the last
--save-kills trials right after some batch of that upload replaced the index file, before its
sidecar and SQLite commit), restarted on the same data, and asked one question (so it opens its
index and repairs what the crash left). Then, on disk, while the restarted server idles:
  - the FAISS index holds exactly the docstore's chunk vector ids, its sidecar's count and
    version match, and the index count equals the docstore count;
  - every acknowledged document is stored whole (all its chunks); of the upload in flight, the
    unacknowledged rest is stored as whole batches in file order (jobs: a prefix of
    --job-batch documents at a time, or all of it; --sync: all or nothing); no other document
    exists;
  - (jobs) the job in flight reads `interrupted`, and the chunks it reports done are stored;
  - every acknowledged document is found first by BM25 for its unique token and by dense search
    for its own indexed text (title + text: the stored vector itself, so any miss is a missing
    or wrong vector).
Trials run on the same data, one after another. Exit 1 when any check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from live_server import REPO, LiveServer, scratch_home

WORDS = ("amber basalt cedar delta ember fjord granite harbor iris juniper kelp lagoon meadow nectar "
         "obsidian prairie quartz reef sierra tundra umber valley willow xylem yarrow zephyr").split()


def batch_records(trial: int, n: int, size: int) -> list[dict]:
    """`size` documents; each has an id, a unique token and a distinct word mix."""
    records = []
    for i in range(size):
        key = f"t{trial}b{n}d{i}"
        words = " ".join(random.Random(key).choices(WORDS, k=12))
        records.append({"id": key, "title": f"Record {key}",
                        "text": f"Record {key} carries the token zq{key}x. It mentions {words}."})
    return records


@dataclass
class Uploader:
    """Uploads batches back to back on its own thread until stopped or the server dies."""

    server: LiveServer
    trial: int
    size: int
    jobs: bool
    acked: list[dict] = field(default_factory=list)  # finished uploads: {"batch", "ids", "seconds", ...}
    # the upload being sent: {"batch", "ids", "sent_at", "job": id or None, "acked": documents done}
    in_flight: dict | None = None
    failure: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=300) as http:
            n = 0
            while not self.stop.is_set():
                records = batch_records(self.trial, n, self.size)
                body = "".join(json.dumps(r) + "\n" for r in records).encode()
                self.in_flight = {"batch": f"t{self.trial}b{n}", "ids": [r["id"] for r in records],
                                  "sent_at": time.monotonic(), "job": None, "acked": 0}
                try:
                    response = self.server.upload(http, f"batch-t{self.trial}-{n}.jsonl", body)
                    result = self.follow_job(http, response) if self.jobs else self.reply(response, 201)
                except httpx.TransportError:
                    return  # killed mid-upload: this batch stays in_flight
                if result is None:
                    return
                if sorted(result["ids"]) != sorted(self.in_flight["ids"]):
                    self.failure = f"upload {n}: acknowledged ids differ from the ids sent"
                    return
                self.acked.append({**self.in_flight, "seconds": time.monotonic() - self.in_flight["sent_at"]})
                self.in_flight = None
                n += 1

    def reply(self, response: httpx.Response, status: int) -> dict | None:
        if response.status_code != status:
            self.failure = f"{response.request.url.path}: {response.status_code} {response.text[:300]}"
            return None
        return response.json()

    def follow_job(self, http: httpx.Client, response: httpx.Response) -> dict | None:
        """Poll the upload's job until it ends; each poll acknowledges the documents it reports
        done. Returns the job's result (what a synchronous upload answers)."""
        job = self.reply(response, 202)
        if job is None:
            return None
        self.in_flight["job"] = job["id"]
        while job["state"] in ("queued", "running"):
            time.sleep(0.02)
            job = self.reply(http.get(f"{self.server.url}/jobs/{job['id']}", headers=self.server.headers), 200)
            if job is None:
                return None
            self.in_flight["acked"] = job["documents_done"]
        if job["state"] != "done":
            self.failure = f"job {job['id']}: {job['state']}, errors {job['errors'][:3]}"
            return None
        return job["result"]


def kill_mid_upload(server: LiveServer, uploader: Uploader, min_acks: int, fraction: float | None) -> dict:
    """Let `min_acks` uploads be acknowledged, then SIGKILL `fraction` of a typical upload's time
    into the next one, or (fraction None) as soon as the next upload has replaced the index file:
    before its sidecar and its SQLite commit. Returns when and what was in flight."""
    thread = threading.Thread(target=uploader.run, daemon=True)
    thread.start()
    while len(uploader.acked) < min_acks:
        if uploader.failure or not thread.is_alive():
            raise RuntimeError(f"uploads stopped early: {uploader.failure}")
        time.sleep(0.05)
    typical = sorted(a["seconds"] for a in uploader.acked)[len(uploader.acked) // 2]
    if fraction is None:
        index_file = server.home / "indexes" / server.collection / "dense.faiss"
        saved = os.stat(index_file).st_ino  # os.replace of a new index changes the inode
        while os.stat(index_file).st_ino == saved:
            time.sleep(0.0002)
    else:
        while uploader.in_flight is None:
            time.sleep(0.001)
        target = uploader.in_flight["sent_at"] + fraction * typical
        time.sleep(max(0.0, target - time.monotonic()))
    in_flight = uploader.in_flight
    killed_after = time.monotonic() - in_flight["sent_at"] if in_flight else None
    server.kill()
    uploader.stop.set()
    thread.join(timeout=60)
    return {"in_flight": in_flight, "killed_after_s": killed_after, "typical_upload_s": typical}


def disk_state(collection_dir: Path) -> dict:
    """What the docstore and the FAISS index hold, read raw (no rearqa code, no repair)."""
    import faiss
    import numpy as np

    db = sqlite3.connect(f"file:{collection_dir / 'docstore.sqlite'}?mode=ro", uri=True)
    try:
        vector_ids = [r[0] for r in db.execute("SELECT vector_id FROM chunks ORDER BY vector_id")]
        docs = dict(db.execute("SELECT d.doc_key, COUNT(c.vector_id) FROM documents d LEFT JOIN chunks c "
                               "ON c.doc_id = d.doc_id GROUP BY d.doc_id"))
        version = int(db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])
    finally:
        db.close()
    index = faiss.read_index(str(collection_dir / "dense.faiss"))
    index_ids = np.sort(faiss.vector_to_array(index.id_map)).tolist()
    sidecar = json.loads((collection_dir / "dense.json").read_text())
    return {"vector_ids": vector_ids, "documents": docs, "docstore_version": version, "index_ids": index_ids,
            "index_ntotal": int(index.ntotal), "sidecar_count": sidecar["count"],
            "sidecar_version": sidecar["docstore_version"]}


def consistency(state: dict, acked: list[str], in_flight: list[str], batch: int | None) -> dict[str, bool]:
    """`in_flight`: the upload's unacknowledged documents, in file order; `batch`: documents per
    committed batch (None: the upload is one batch)."""
    docs = state["documents"]
    stored = [key in docs for key in in_flight]
    n = sum(stored)
    whole_batches = stored == [True] * n + [False] * (len(in_flight) - n) and (
        n in (0, len(in_flight)) if batch is None else n % batch == 0 or n == len(in_flight))
    return {
        "index ids == docstore chunk ids": state["index_ids"] == state["vector_ids"],
        "index count == docstore count": state["index_ntotal"] == len(state["vector_ids"]) == state["sidecar_count"],
        "sidecar version == docstore version": state["sidecar_version"] == state["docstore_version"],
        "every acknowledged document stored": all(docs.get(key, 0) >= 1 for key in acked),
        "upload in flight: unacknowledged rest stored as whole batches in order": whole_batches,
        "no document outside acknowledged + in flight": set(docs) <= set(acked) | set(in_flight),
    }


def searchable(collection_dir: Path, acked: list[str], records: dict[str, dict]) -> dict:
    """Top-1 hits of BM25 (unique token) and dense (own text) for every acknowledged document."""
    from rearqa.retriever import Collection, RetrieverConfig
    from rearqa.retriever.chunking import indexed_text

    with Collection(collection_dir, RetrieverConfig()) as col:
        tokens = [f"zq{key}x" for key in acked]
        texts = [indexed_text(records[key]["title"], records[key]["text"], col.config.embed_title) for key in acked]
        bm25 = col.retriever("bm25").search_batch(tokens, 1)
        dense = col.retriever("dense").search_batch(texts, 1)
    doc_of = lambda hits: hits[0].id.split("@")[0].split("#")[0] if hits else None  # noqa: E731
    bm25_missed = [k for k, hits in zip(acked, bm25) if doc_of(hits) != k]
    dense_missed = [k for k, hits in zip(acked, dense) if doc_of(hits) != k]
    return {"bm25_missed": bm25_missed, "dense_missed": dense_missed}


def run_trial(server: LiveServer, trial: int, args, acked_so_far: list[str], records: dict) -> dict:
    uploader = Uploader(server, trial, args.batch, jobs=not args.sync)
    # kill early, midway, late into an upload; the last --save-kills trials at an index save
    fraction = (trial + 0.5) / args.timed if trial < args.timed else None
    kill = kill_mid_upload(server, uploader, args.min_acks + trial, fraction)
    for n in range(len(uploader.acked) + 1):
        records.update({r["id"]: r for r in batch_records(trial, n, args.batch)})
    flight = kill["in_flight"] or {"ids": [], "acked": 0, "job": None, "batch": None}
    acked = acked_so_far + [key for a in uploader.acked for key in a["ids"]] + flight["ids"][:flight["acked"]]
    rest = flight["ids"][flight["acked"]:]
    after_kill = disk_state(server.home / "indexes" / server.collection)
    drift = {"index_ahead_of_docstore": after_kill["sidecar_version"] > after_kill["docstore_version"],
             "stray_index_ids": len(set(after_kill["index_ids"]) - set(after_kill["vector_ids"])),
             "chunks_without_vector": len(set(after_kill["vector_ids"]) - set(after_kill["index_ids"]))}
    restart_s = server.start()
    with httpx.Client(timeout=300) as http:  # opens the index (and repairs it) in the server
        ask = http.post(f"{server.url}/ask", json={"question": f"Which record carries the token zq{acked[-1]}x?"},
                        headers=server.headers)
        job = http.get(f"{server.url}/jobs/{flight['job']}", headers=server.headers).json() if flight["job"] else None
    state = disk_state(server.home / "indexes" / server.collection)
    checks = consistency(state, acked, rest, None if args.sync else args.job_batch)
    checks["question answered after restart"] = ask.status_code == 200
    stored_rest = [key for key in rest if key in state["documents"]]
    if job is not None:  # (a kill before the 202 leaves no job to ask about)
        finished = job["state"] == "done" and len(stored_rest) == len(rest)  # it ended just before the kill
        checks["job in flight reads interrupted after restart"] = job["state"] == "interrupted" or finished
        checks["job's chunks done are stored"] = job["chunks_done"] <= flight["acked"] + len(stored_rest)
    found = searchable(server.home / "indexes" / server.collection, acked, records)
    checks["every acknowledged document found by BM25"] = not found["bm25_missed"]
    checks["every acknowledged document found by dense search"] = not found["dense_missed"]
    return {"trial": trial, "acknowledged_uploads": len(uploader.acked), "acknowledged_documents_total": len(acked),
            "kill_fraction_of_upload": round(fraction, 2) if fraction is not None else "at index save",
            "killed_after_s": kill["killed_after_s"], "typical_upload_s": kill["typical_upload_s"],
            "in_flight_upload": flight["batch"], "in_flight_job": flight["job"],
            "in_flight_acked_documents": flight["acked"], "in_flight_stored_beyond_acked": len(stored_rest),
            "job_after_restart": {k: job[k] for k in ("state", "chunks_done", "chunks_total")} if job else None,
            "on_disk_right_after_kill": drift, "restart_s": restart_s,
            "documents_after_restart": len(state["documents"]),
            "chunks_after_restart": len(state["vector_ids"]), "checks": checks, **found,
            "acked_after": acked + stored_rest}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="kills at a fraction of an upload's time")
    parser.add_argument("--save-kills", type=int, default=2,
                        help="further kills right after an upload replaced the index file")
    parser.add_argument("--batch", type=int, default=100, help="documents per upload (at most 100)")
    parser.add_argument("--min-acks", type=int, default=5, help="finished uploads before the first kill")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="write the server's log here (default: inside the scratch home, deleted at the end)")
    parser.add_argument("--sync", action="store_true",
                        help="synchronous uploads (201 replies) instead of ingestion jobs")
    parser.add_argument("--job-batch", type=int, default=25,
                        help="chunks (here: documents) per committed batch of a job")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "reliability-crash.json")
    args = parser.parse_args()
    if not 1 <= args.batch <= 100 or args.min_acks < 5 or args.trials < 1:
        parser.error("give --batch 1..100, --min-acks >= 5 and --trials >= 1")

    trials, records, acked = [], {}, []
    with tempfile.TemporaryDirectory(prefix="rearqa-crash-") as tmp:
        home = scratch_home(Path(tmp))
        serve_args = () if args.sync else ("--job-threshold-kb", "0", "--job-batch-chunks", str(args.job_batch))
        log_path = args.server_log or home / "server.log"
        with LiveServer(home, collection="crash", log_path=log_path, serve_args=serve_args) as server:
            server.start()
            args.timed = args.trials
            for trial in range(args.trials + args.save_kills):
                result = run_trial(server, trial, args, acked, records)
                acked = result.pop("acked_after")
                trials.append(result)
                print(f"trial {trial}: {result['acknowledged_uploads']} uploads acknowledged, killed "
                      f"{result['killed_after_s'] or 0:.2f} s into upload {result['in_flight_upload']} "
                      f"(typical {result['typical_upload_s']:.2f} s; documents of it acknowledged "
                      f"{result['in_flight_acked_documents']}, stored beyond them after restart "
                      f"{result['in_flight_stored_beyond_acked']}; job after restart: "
                      f"{result['job_after_restart']}); right after the kill: "
                      f"{result['on_disk_right_after_kill']}; restart {result['restart_s']:.0f} s")
                for name, passed in result["checks"].items():
                    print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    passed = all(all(t["checks"].values()) for t in trials)
    verdict = "all checks passed" if passed else "FAILED"
    print(f"{len(trials)} kills, {len(acked)} documents acknowledged or kept; {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {**vars(args), "out": str(args.out)}, "passed": passed,
                                    "trials": trials}, indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
