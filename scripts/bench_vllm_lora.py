"""Tokens/s of a fine-tuned reader on vLLM: its adapter served as a LoRA vs merged into the weights.

    python scripts/bench_vllm_lora.py --n 16 --out docs/results/vllm_lora_throughput.json

Both engines are built as `rearqa serve --engine vllm --method rag-ft` builds them
(`finetuned.vllm_engine`, `reader.dtype`, default bf16), one per `reader.vllm_adapter`: `lora`
serves the adapter unmerged (one LoRARequest with every request), `merged` the plain checkpoint
with the adapter merged in fp32 (cached under the rearqa home, served with no LoRA). The same rag-ft chat
prompts (NQ-test questions with three passages of tests/data/mini_corpus.jsonl) go to each, every
request generating exactly --tokens tokens (ignore_eos), so tokens/s compare like for like:
- batch: all --n prompts in one call (throughput);
- single: --single prompts one after another (one sequence's decode speed).
Engines start one after the other in this process (start-up time is reported, not timed in).
Prints a table and writes JSON with the per-run figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prompts(engine, config, n: int) -> list[list[int]]:
    from rearqa.asset_paths import qa_file
    from rearqa.reader.prompts import build_messages, get_prompt
    from rearqa.types import Passage

    rows = [json.loads(line) for line in (ROOT / "tests/data/mini_corpus.jsonl").read_text().splitlines()]
    corpus = [Passage(r["id"], r["text"], title=r["title"]) for r in rows]
    questions = [json.loads(line)["question"] for line in qa_file("nq-test").read_text().splitlines()[:n]]
    template = get_prompt(config.prompt)
    return [engine.encode(build_messages(q, [corpus[(i + j) % len(corpus)] for j in range(3)], template,
                                         config.max_passage_words))
            for i, q in enumerate(questions)]


def timed(engine, batch: list[list[int]], tokens: int) -> dict:
    from vllm import SamplingParams

    # Not engine.greedy_params: its stop ids (the adapter's saved eos) would end some requests
    # early on the lora engine only; every request here makes exactly `tokens` tokens.
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True, detokenize=False)
    start = time.perf_counter()
    outputs = engine.run(batch, params)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"prompts": len(batch), "generated_tokens": generated, "seconds": seconds,
            "tokens_per_s": generated / seconds}


def bench(label: str, engine, config, args) -> dict:
    batch = prompts(engine, config, args.n)
    timed(engine, batch, 2)  # warm-up at the batch size timed: compilation, LoRA loading
    result = {"engine": label, "prompt_tokens_mean": sum(map(len, batch)) / len(batch),
              "batch": timed(engine, batch, args.tokens)}
    singles = [timed(engine, [p], args.tokens) for p in batch[:args.single]]
    if any(t["generated_tokens"] != t["prompts"] * args.tokens for t in (result["batch"], *singles)):
        raise RuntimeError(f"{label}: a request stopped before {args.tokens} tokens")
    result["single"] = {"prompts": len(singles), "seconds": sum(s["seconds"] for s in singles),
                        "tokens_per_s": sum(s["generated_tokens"] for s in singles)
                        / sum(s["seconds"] for s in singles)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="prompts in the batch run")
    ap.add_argument("--single", type=int, default=4, help="prompts run one at a time")
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per prompt")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/vllm_lora_throughput.json")
    args = ap.parse_args()

    from rearqa.asset_paths import reader_model_dir
    from rearqa.reader.config import ReaderConfig, resolve_adapter
    from rearqa.reader.finetuned import vllm_engine

    config = ReaderConfig(method="rag-ft", engine="vllm", dtype=args.dtype)
    model_dir, adapter = reader_model_dir(), resolve_adapter(config)
    results = []
    for label in ("lora", "merged"):  # reader.vllm_adapter
        start = time.perf_counter()  # the merged leg's first run includes writing its checkpoint
        engine = vllm_engine(dataclasses.replace(config, vllm_adapter=label), model_dir)
        started = time.perf_counter() - start
        try:
            results.append({**bench(label, engine, config, args), "startup_s": started})
        finally:
            engine.close()
    report = {"adapter": str(adapter), "base_model": str(model_dir), "dtype": args.dtype,
              "tokens_per_prompt": args.tokens, "machine": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d"), "results": results}
    print(f"| engine | batch of {args.n}: tokens/s | one at a time: tokens/s | start-up (s) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['batch']['tokens_per_s']:.1f} | {r['single']['tokens_per_s']:.1f} | "
              f"{r['startup_s']:.0f} |")
    lora, merged_r = results
    print(f"lora / merged: batch {lora['batch']['tokens_per_s'] / merged_r['batch']['tokens_per_s']:.2f}x, "
          f"one at a time {lora['single']['tokens_per_s'] / merged_r['single']['tokens_per_s']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
