"""Where a /ask's reader time goes on the vLLM engine: prefill (max_tokens 1) against prefill +
decode (max_tokens 8), one prompt at a time and 8 or 32 at once, for the load test's RAG prompt
shape (the mini corpus, two passages, about 116 tokens). Prints one line per measurement.

    PYTHONPATH=src .venv/bin/python scripts/reliability/vllm_profile.py [threads]

The figures quoted in docs/reliability.md (issue 17) are this script's output of 2026-12-04,
08:35 UTC (load average about 1), on the engine before the engine loop (`run` was
`vllm.LLM.generate` then; the same forward passes); it writes no JSON.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
from pathlib import Path

def main():
    from rearqa import assets
    from rearqa.reader.engines.vllm_engine import VllmEngine
    from rearqa.reader.prompts import build_messages, get_prompt
    from rearqa.types import Passage
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    model = assets.reader_model_dir(assets.home())
    t = time.perf_counter()
    eng = VllmEngine(model, dtype="bfloat16", threads=threads)
    print("start", time.perf_counter()-t, eng.log_path, flush=True)
    rows = [json.loads(l) for l in open("tests/data/mini_corpus.jsonl")]
    ps = [Passage(r["id"], r["text"], title=r["title"]) for r in rows]
    tmpl = get_prompt("short")
    def msgs(q, i): return build_messages(q, [ps[i%6], ps[(i+1)%6]], tmpl, 150)
    ids = eng.encode(msgs("Who wrote Hamlet?", 0))
    print("prompt tokens", len(ids))
    from vllm import SamplingParams
    for mt in (1, 8):
        p = eng.greedy_params(mt)
        for rep in range(3):
            t = time.perf_counter(); eng.run([ids], p); print(f"single same max_tokens={mt}", round(time.perf_counter()-t,3))
    # distinct prompts, single
    for mt in (1, 8):
        p = eng.greedy_params(mt)
        for rep in range(3):
            q = f"Question number {rep}{mt} about item {rep*7+mt}: who is it?"
            t = time.perf_counter(); eng.run([eng.encode(msgs(q, rep))], p); print(f"single distinct max_tokens={mt}", round(time.perf_counter()-t,3))
    for n in (8, 32):
        for mt in (1, 8):
            p = eng.greedy_params(mt)
            prompts = [eng.encode(msgs(f"Distinct question {n} {mt} {i} about the thing {i*3}?", i)) for i in range(n)]
            t = time.perf_counter(); eng.run(prompts, p); dt = time.perf_counter()-t
            print(f"batch {n} distinct max_tokens={mt}: {dt:.3f} s, {n/dt:.2f}/s", flush=True)
            t = time.perf_counter(); eng.run(prompts, p); dt = time.perf_counter()-t
            print(f"batch {n} repeated max_tokens={mt}: {dt:.3f} s, {n/dt:.2f}/s", flush=True)
    eng.close()

if __name__ == "__main__":
    main()
