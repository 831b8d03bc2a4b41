"""Load test of POST /ask on a real `rearqa serve` process: many clients, a fixed duration.

    .venv/bin/python scripts/reliability/load.py --clients 32 --seconds 60 --out docs/results/reliability-load.json
    .venv/bin/python scripts/reliability/load.py --engine vllm --max-batch 1 ...   # the one-at-a-time server
    .venv/bin/python scripts/reliability/load.py --engine vllm --burst 64 ...      # 64 asks at once

Starts the server on a free loopback port over a scratch data home holding tests/data/mini_corpus.jsonl
(uploaded through POST /documents), with short answers (reader.max_new_tokens 8), then runs
`--clients` httpx clients that ask questions back to back for `--seconds`. A client told 429
waits the Retry-After seconds (at most --max-backoff) and asks again. Requirements (exit 1 when
one fails): no 5xx, no client timeout or connection error, every 429 carries Retry-After, and a
goodput of at least 90%: of the requests the server admitted (all but the 429s), the share that
succeeded. Throughput and p50/p99 latency are of successes. `--questions distinct` sends no
question twice (the six fixed ones repeat every six requests); `--src` runs another checkout's
server code (a baseline); the load average at the start is recorded, since the machine is shared.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from live_server import MINI_CORPUS, REPO, LiveServer, scratch_home

QUESTIONS = ["Who wrote Hamlet?", "What is the capital of France?", "What is the highest mountain on Earth?",
             "Which planet is the fifth from the Sun?", "Who painted the Mona Lisa?", "When was Hamlet written?"]


def distinct_questions(n: int = 1200, seed: int = 0) -> list[str]:
    """`n` different questions about the mini corpus's subjects (an opening x an ask x a subject,
    shuffled), so no two requests of a run send the same prompt until all are used."""
    import random

    openings = ["", "Quick question: ", "Please tell me, ", "I wonder: ", "Briefly, ", "Can you say ",
                "Help me out: ", "One more: "]
    asks = ["who made {s}?", "what is {s}?", "where is {s}?", "when was {s} made?", "why is {s} famous?",
            "what is {s} known for?", "how old is {s}?", "who is connected with {s}?",
            "what kind of thing is {s}?", "what should I know about {s}?", "how big is {s}?",
            "which country is {s} linked to?", "what is special about {s}?", "how would you describe {s}?",
            "what is the story of {s}?", "who first studied {s}?", "what is {s} made of?",
            "what is the history of {s}?", "is {s} well known?", "what are the facts about {s}?",
            "what does {s} look like?", "who visits {s}?", "what is the best fact about {s}?",
            "what was said about {s}?", "how is {s} described?"]
    subjects = ["Hamlet", "Mount Everest", "Paris", "Jupiter", "the Mona Lisa", "Shakespeare",
                "the Seine", "the Himalayas", "Leonardo da Vinci", "the Solar System"]
    pool = [o + a.format(s=s) for o in openings for a in asks for s in subjects]
    random.Random(seed).shuffle(pool)
    return [q[0].upper() + q[1:] for q in pool[:n]]


class Questions:
    """The questions the clients send, in turn: the six fixed ones (each client starting at its own
    number, as before) or all different (`distinct_questions`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.pool = QUESTIONS if kind == "six" else distinct_questions()
        self.sent = 0

    def next(self, client: int, i: int) -> str:
        if self.kind == "six":
            return QUESTIONS[(client + i) % len(QUESTIONS)]
        self.sent += 1
        return self.pool[(self.sent - 1) % len(self.pool)]


async def ask_once(server: LiveServer, http: httpx.AsyncClient, question: str, row: dict) -> dict:
    started = time.monotonic()
    try:
        response = await http.post(f"{server.url}/ask", json={"question": question}, headers=server.headers)
        row.update(status=response.status_code, retry_after=response.headers.get("retry-after"))
    except httpx.TimeoutException:
        row.update(status="timeout")
    except httpx.TransportError as exc:
        row.update(status=f"transport:{type(exc).__name__}")
    row.update(start_s=started, seconds=time.monotonic() - started)
    return row


async def client(server: LiveServer, http: httpx.AsyncClient, n: int, until: float, max_backoff: float,
                 log: list[dict], questions: Questions) -> None:
    i = 0
    while time.monotonic() < until:
        question = questions.next(n, i)
        i += 1
        row = await ask_once(server, http, question, {"client": n, "question": question})
        log.append(row)
        if row["status"] == 429:
            wait = float(row["retry_after"]) if str(row["retry_after"]).isdigit() else max_backoff
            await asyncio.sleep(min(wait, max_backoff, max(0.0, until - time.monotonic())))


async def drive(server: LiveServer, clients: int, seconds: float, timeout: float, max_backoff: float,
                questions: Questions) -> list[dict]:
    log: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(client(server, http, n, t0 + seconds, max_backoff, log, questions)
                               for n in range(clients)))
    for row in log:
        row.update(start_s=round(row["start_s"] - t0, 3), seconds=round(row["seconds"], 3))
    return log


async def burst(server: LiveServer, n: int, timeout: float, questions: Questions) -> list[dict]:
    """`n` asks sent at the same moment, each on its own connection, no retry."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        t0 = time.monotonic()
        log = await asyncio.gather(*(ask_once(server, http, q, {"client": i, "question": q})
                                     for i, q in enumerate(questions.next(i, 0) for i in range(n))))
    for row in log:
        row.update(start_s=round(row["start_s"] - t0, 3), seconds=round(row["seconds"], 3))
    return list(log)


def summarise_burst(log: list[dict]) -> dict:
    statuses = collections.Counter(str(r["status"]) for r in log)
    ok = sorted(r["seconds"] for r in log if r["status"] == 200)
    return {"requests": len(log), "statuses": dict(statuses), "answered": len(ok),
            "last_answer_s": ok[-1] if ok else None, "first_answer_s": ok[0] if ok else None,
            "p50_s": float(np.percentile(ok, 50)) if ok else None,
            "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "timeouts_or_transport_errors": sum(n for s, n in statuses.items()
                                                if s == "timeout" or s.startswith("transport"))}


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
    parser.add_argument("--max-batch", type=int, default=None,
                        help="rearqa serve --max-batch (1: one at a time; default: the server's)")
    parser.add_argument("--engine", choices=["hf", "vllm"], default=None, help="reader.engine (default: hf)")
    parser.add_argument("--kv-block-size", type=int, default=0, help="reader.kv_block_size (vllm; 0: vLLM's 128)")
    parser.add_argument("--threads", type=int, default=0, help="reader.threads (0: the engine's default)")
    parser.add_argument("--questions", choices=["six", "distinct"], default="six",
                        help="six: the six fixed questions in turn; distinct: no question sent twice")
    parser.add_argument("--burst", type=int, default=0,
                        help="instead of the timed run: this many asks at once (how many answered, the last's latency)")
    parser.add_argument("--burst-after", type=int, default=0,
                        help="after the timed run, once the server is idle, this many asks at once on the same server")
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the rearqa sources the server runs (e.g. another checkout's src, for a baseline)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "reliability-load.json")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rearqa-load-") as tmp:
        home = scratch_home(Path(tmp))
        with LiveServer(home, max_new_tokens=args.max_new_tokens, max_queue=args.max_queue,
                        engine=args.engine or "", kv_block_size=args.kv_block_size, max_batch=args.max_batch,
                        threads=args.threads,
                        src=args.src,
                        log_path=home / "server.log") as server:
            ready_s = server.start()
            with httpx.Client(timeout=300) as http:
                server.upload(http, "mini_corpus.jsonl", MINI_CORPUS.read_bytes()).raise_for_status()
                http.post(f"{server.url}/ask", json={"question": QUESTIONS[0]}).raise_for_status()  # warm
            load_at_start = os.getloadavg()  # of the minute before the clients start
            questions = Questions(args.questions)
            burst_log: list[dict] = []
            if args.burst:
                log = asyncio.run(burst(server, args.burst, args.timeout, questions))
            else:
                log = asyncio.run(drive(server, args.clients, args.seconds, args.timeout, args.max_backoff,
                                        questions))
            if args.burst_after:
                time.sleep(max(5.0, args.max_backoff))  # every client has stopped and been answered
                burst_log = asyncio.run(burst(server, args.burst_after, args.timeout, questions))
            alive = server.process.poll() is None
            health = httpx.get(f"{server.url}/health", timeout=30).json()
    settings = {**vars(args), "out": str(args.out), "src": str(args.src)}
    head = (f"engine {args.engine or 'hf'}, kv_block_size {args.kv_block_size or 'default'}, threads {args.threads or 'default'}, max_batch {args.max_batch or 'default'}, max_queue {args.max_queue}, "
            f"max_new_tokens {args.max_new_tokens}, questions {args.questions}, src {args.src} "
            f"(server ready in {ready_s:.0f} s; load average at start {load_at_start[0]:.2f})")
    if args.burst:
        summary = summarise_burst(log)
        print(f"burst of {args.burst}; {head}")
        print(f"answered {summary['answered']} of {args.burst}, statuses {summary['statuses']}; "
              f"latency of the last answer {summary['last_answer_s'] or 0:.2f} s")
    else:
        summary = summarise(log, args.seconds)
        summary["requirements"]["server still running"] = alive
        print(f"{args.clients} clients, {args.seconds:.0f} s; {head}")
        print(f"{'status':<22} {'requests':>9}")
        for status, n in sorted(summary["statuses"].items()):
            print(f"{status:<22} {n:>9}")
        print(f"goodput {summary['goodput']:.1%} of {summary['admitted']} admitted; "
              f"throughput {summary['throughput_rps']:.2f} req/s (offered {summary['offered_rps']:.2f}); "
              f"latency of successes p50 {summary['p50_s'] or 0:.2f} s, p99 {summary['p99_s'] or 0:.2f} s")
        for name, passed in summary["requirements"].items():
            print(f"{'PASS' if passed else 'FAIL'}  {name}")
    if burst_log:
        summary["burst_after"] = {**summarise_burst(burst_log), "requests": burst_log}
        b = summary["burst_after"]
        print(f"then a burst of {args.burst_after}: answered {b['answered']}, statuses {b['statuses']}; "
              f"latency of the last answer {b['last_answer_s'] or 0:.2f} s")
        summary["requirements"]["burst: no 5xx"] = b["server_errors_5xx"] == 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": settings, "ready_s": ready_s, "load_average_at_start": load_at_start,
                                    "health_after": health, "summary": summary, "requests": log}, indent=1))
    if args.burst:
        return 0 if alive and summary["server_errors_5xx"] == 0 and summary["answered"] else 1
    return 0 if all(summary["requirements"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
