"""Load test of POST /ask on a real `rearqa serve` process: many clients, a fixed duration.

    .venv/bin/python scripts/reliability/load.py --clients 32 --seconds 60 --out docs/results/reliability-load.json

Starts the server on a free loopback port over a scratch data home holding tests/data/mini_corpus.jsonl
(uploaded through POST /documents), with short answers (reader.max_new_tokens 8), then runs
`--clients` httpx clients that ask questions back to back for `--seconds`. A client told 429
waits the Retry-After seconds (at most --max-backoff) and asks again. Requirements (exit 1 when
one fails): no 5xx, no client timeout or connection error, every 429 carries Retry-After, and a
goodput of at least 90%: of the requests the server admitted (all but the 429s), the share that
succeeded. Throughput and p50/p99 latency are of successes.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from live_server import MINI_CORPUS, REPO, LiveServer, scratch_home

QUESTIONS = ["Who wrote Hamlet?", "What is the capital of France?", "What is the highest mountain on Earth?",
             "Which planet is the fifth from the Sun?", "Who painted the Mona Lisa?", "When was Hamlet written?"]


async def client(server: LiveServer, http: httpx.AsyncClient, n: int, until: float, max_backoff: float,
                 log: list[dict]) -> None:
    i = n
    while time.monotonic() < until:
        question = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        started = time.monotonic()
        row = {"client": n, "question": question}
        try:
            response = await http.post(f"{server.url}/ask", json={"question": question}, headers=server.headers)
            row.update(status=response.status_code, retry_after=response.headers.get("retry-after"))
        except httpx.TimeoutException:
            row.update(status="timeout")
        except httpx.TransportError as exc:
            row.update(status=f"transport:{type(exc).__name__}")
        row.update(start_s=started, seconds=time.monotonic() - started)
        log.append(row)
        if row["status"] == 429:
            wait = float(row["retry_after"]) if str(row["retry_after"]).isdigit() else max_backoff
            await asyncio.sleep(min(wait, max_backoff, max(0.0, until - time.monotonic())))


async def drive(server: LiveServer, clients: int, seconds: float, timeout: float, max_backoff: float) -> list[dict]:
    log: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(client(server, http, n, t0 + seconds, max_backoff, log) for n in range(clients)))
    for row in log:
        row.update(start_s=round(row["start_s"] - t0, 3), seconds=round(row["seconds"], 3))
    return log


def summarise(log: list[dict], seconds: float) -> dict:
    statuses = collections.Counter(str(r["status"]) for r in log)
    ok = [r["seconds"] for r in log if r["status"] == 200]
    refused = [r for r in log if r["status"] == 429]
    admitted = len(log) - len(refused)
    errors = sum(n for s, n in statuses.items() if s.startswith("5"))
    failed_transport = sum(n for s, n in statuses.items() if s == "timeout" or s.startswith("transport"))
    summary = {
        "requests": len(log), "statuses": dict(statuses), "succeeded": len(ok), "refused_429": len(refused),
        "admitted": admitted, "goodput": len(ok) / admitted if admitted else 0.0,
        "throughput_rps": len(ok) / seconds, "offered_rps": len(log) / seconds,
        "p50_s": float(np.percentile(ok, 50)) if ok else None, "p99_s": float(np.percentile(ok, 99)) if ok else None,
        "max_s": max(ok) if ok else None, "server_errors_5xx": errors, "timeouts_or_transport_errors": failed_transport,
        "429_without_retry_after": sum(1 for r in refused if not r["retry_after"]),
    }
    summary["requirements"] = {
        "no 5xx": errors == 0, "no client timeout": failed_transport == 0,
        "every 429 has Retry-After": summary["429_without_retry_after"] == 0,
        "goodput >= 90%": summary["goodput"] >= 0.9, "some requests succeeded": bool(ok)}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="client timeout per request (s)")
    parser.add_argument("--max-backoff", type=float, default=5.0, help="longest wait after a 429 (s)")
    parser.add_argument("--max-queue", type=int, default=8, help="rearqa serve --max-queue")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "reliability-load.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rearqa-load-") as tmp:
        home = scratch_home(Path(tmp))
        with LiveServer(home, max_new_tokens=args.max_new_tokens, max_queue=args.max_queue,
                        log_path=home / "server.log") as server:
            ready_s = server.start()
            with httpx.Client(timeout=300) as http:
                server.upload(http, "mini_corpus.jsonl", MINI_CORPUS.read_bytes()).raise_for_status()
                http.post(f"{server.url}/ask", json={"question": QUESTIONS[0]}).raise_for_status()  # warm
            log = asyncio.run(drive(server, args.clients, args.seconds, args.timeout, args.max_backoff))
            alive = server.process.poll() is None
    summary = summarise(log, args.seconds)
    summary["requirements"]["server still running"] = alive
    print(f"{args.clients} clients, {args.seconds:.0f} s, max_queue {args.max_queue}, "
          f"max_new_tokens {args.max_new_tokens} (server ready in {ready_s:.0f} s)")
    print(f"{'status':<22} {'requests':>9}")
    for status, n in sorted(summary["statuses"].items()):
        print(f"{status:<22} {n:>9}")
    print(f"goodput {summary['goodput']:.1%} of {summary['admitted']} admitted; "
          f"throughput {summary['throughput_rps']:.2f} req/s (offered {summary['offered_rps']:.2f}); "
          f"latency of successes p50 {summary['p50_s'] or 0:.2f} s, p99 {summary['p99_s'] or 0:.2f} s")
    for name, passed in summary["requirements"].items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {**vars(args), "out": str(args.out)}, "ready_s": ready_s,
                                    "summary": summary, "requests": log}, indent=1))
    return 0 if all(summary["requirements"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
