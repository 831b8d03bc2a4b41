"""A large upload as an ingestion job: how fast POST /documents answers, and the job's progress.

    .venv/bin/python scripts/reliability/upload_job.py --chunks 6000 --follow-s 180 --out docs/results/reliability-upload-job.json

Starts `rearqa serve` (defaults: jobs for uploads over 64 KiB, 256 chunks per committed batch) on
a free loopback port over a scratch data home, writes a text file that the default chunking
(100 words, 20 overlapping) cuts into exactly `--chunks` chunks, with a unique token in its first
words, and uploads it. Measured at the client: the seconds until the 202 reply with the job id
(requirement: under 1 s; exit 1 otherwise), then GET /jobs/{id} every `--poll-s` seconds for
`--follow-s` seconds (0: until the job ends): chunks done over time, the seconds until the first
committed batch is searchable (POST /ask with the bm25 retriever and k 1 cites the chunk that
holds the token), and, if it ends in that time, the job's total time. Prints a table and
writes JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from live_server import REPO, LiveServer, scratch_home

CHUNK_WORDS, OVERLAP = 100, 20  # rearqa's default chunking (retriever.chunk_words / chunk_overlap)


def text_of_chunks(n: int, token: str) -> str:
    """Words that chunk into exactly `n` chunks: 100 + 80 (n - 1) words, the first one `token`."""
    words = CHUNK_WORDS + (CHUNK_WORDS - OVERLAP) * (n - 1)
    vocabulary = ("amber basalt cedar delta ember fjord granite harbor iris juniper kelp lagoon meadow nectar "
                  "obsidian prairie quartz reef sierra tundra umber valley willow xylem yarrow zephyr").split()
    body = [f"{vocabulary[i % len(vocabulary)]}{i % 997}" for i in range(words - 1)]
    return " ".join([token, *body])


def follow(server: LiveServer, http: httpx.Client, job_id: str, token: str, args) -> dict:
    """Poll the job; note when the first batch is committed and its token retrievable."""
    samples, first_searchable_s, started = [], None, time.monotonic()
    while True:
        job = http.get(f"{server.url}/jobs/{job_id}", headers=server.headers).json()
        elapsed = time.monotonic() - started
        samples.append({"s": round(elapsed, 2), "state": job["state"], "chunks_done": job["chunks_done"],
                        "chunks_total": job["chunks_total"]})
        if first_searchable_s is None and job["chunks_done"] > 0:
            ask = http.post(f"{server.url}/ask", headers=server.headers,
                            json={"question": f"What is {token}?", "k": 1, "retriever": "bm25"})
            cited = ask.json()["citations"] if ask.status_code == 200 else []
            if cited and cited[0]["passage"]["text"].startswith(token):
                first_searchable_s = time.monotonic() - started
        if job["state"] not in ("queued", "running") or (args.follow_s and elapsed > args.follow_s):
            return {"job": job, "samples": samples, "first_batch_searchable_s": first_searchable_s,
                    "followed_s": elapsed}
        time.sleep(args.poll_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=6000, help="chunks the uploaded file makes")
    parser.add_argument("--follow-s", type=float, default=180, help="seconds to follow the job (0: to its end)")
    parser.add_argument("--poll-s", type=float, default=2.0, help="seconds between GET /jobs/{id}")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "reliability-upload-job.json")
    args = parser.parse_args()
    token = "zqbigjobx"
    data = text_of_chunks(args.chunks, token).encode()
    with tempfile.TemporaryDirectory(prefix="rearqa-upload-job-") as tmp:
        home = scratch_home(Path(tmp))
        with LiveServer(home, collection="upload-job", log_path=home / "server.log") as server, \
                httpx.Client(timeout=300) as http:
            server.start()
            started = time.monotonic()
            response = server.upload(http, "big.txt", data)
            answered_s = time.monotonic() - started
            if response.status_code != 202:
                print(f"expected 202, got {response.status_code}: {response.text[:300]}")
                return 1
            job_id = response.json()["id"]
            followed = follow(server, http, job_id, token, args)
    job = followed["job"]
    done_s = (job["finished_at"] - job["started_at"]) if job["state"] == "done" else None
    rate = job["chunks_done"] / followed["followed_s"] if followed["followed_s"] else 0.0
    print(f"| file | chunks | bytes | 202 after | first batch searchable after | chunks done "
          f"(in {followed['followed_s']:.0f} s) | rate | job state | job total |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    first = followed["first_batch_searchable_s"]
    print(f"| big.txt | {job['chunks_total']} | {len(data):,} | {answered_s:.3f} s | "
          f"{f'{first:.1f} s' if first is not None else 'not seen'} | {job['chunks_done']} | "
          f"{rate:.1f} chunks/s | {job['state']} | {f'{done_s:.0f} s' if done_s else '-'} |")
    passed = answered_s < 1.0 and job["chunks_total"] == args.chunks and job["state"] != "failed"
    print("PASS" if passed else "FAIL", f"(202 within 1 s: {answered_s < 1.0})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {**vars(args), "out": str(args.out)}, "bytes": len(data),
                                    "answered_202_s": answered_s, "passed": passed, **followed,
                                    "job_total_s": done_s}, indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
