"""Tokens/s of a fine-tuned reader on vLLM: its adapter served as a LoRA vs merged into the weights.

    python scripts/bench_vllm_lora.py --n 16 --out docs/results/vllm_lora_throughput.json
    python scripts/bench_vllm_lora.py --recipes configs/adapters/budget/{lora,hydra,dvlora}.yaml \
        --out docs/results/adapters/vllm-served-methods.json

--recipes: instead of the shipped rag-ft adapter, one adapter per adapter recipe (issue 15's
methods at their equal budgets), built on the bundled base with every zero-initialised adapter
tensor drawn from N(0, 0.02^2) (seed 0: the speed does not depend on the values, and a zero B
would be a trivially cheap update nowhere), saved, then served the way `rearqa serve` serves a
rearqa method: exported to plain LoRA (vllm_lora_dir, into a scratch directory, not the rearqa
home) and given to vLLM with its rank. The merged leg runs once, with the shipped rag-ft adapter
(its merged checkpoint is cached already): a merged checkpoint has the base's shape whatever the
method.

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
import tempfile
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


def recipe_adapter(recipe: Path, model_dir: Path, out_dir: Path) -> Path:
    """The adapter of `recipe` on the base at `model_dir`, nonzero, saved to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    from rearqa.reader.adapters import wrap
    from rearqa.training.config import TrainConfig, read_adapter_recipe

    settings = TrainConfig(**read_adapter_recipe(recipe))
    torch.manual_seed(0)
    model = wrap(settings.adapter, AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32),
                 settings.adapter_settings())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and not param.any():
                param.normal_(0.0, 0.02)
    model.save_pretrained(out_dir)
    return out_dir


def served(adapter: Path, model_dir: Path, cache_root: Path) -> tuple[Path, dict]:
    """The plain-LoRA directory vLLM serves for `adapter` (its export, for a rearqa method) and
    the rank it is given."""
    from rearqa.reader.adapters.export import vllm_max_lora_rank
    from rearqa.reader.adapters.vllm_lora import vllm_lora_dir

    lora_dir = Path(vllm_lora_dir(adapter, model_dir, cache_root=cache_root))
    rank = json.loads((lora_dir / "adapter_config.json").read_text())["r"]
    return lora_dir, {"rank": rank, "vllm_max_lora_rank": vllm_max_lora_rank(rank)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="prompts in the batch run")
    ap.add_argument("--single", type=int, default=4, help="prompts run one at a time")
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per prompt")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/vllm_lora_throughput.json")
    ap.add_argument("--recipes", nargs="+", type=Path, default=[],
                    help="adapter recipes (configs/adapters/...): one LoRA leg each instead of the shipped rag-ft adapter")
    args = ap.parse_args()

    from rearqa.asset_paths import reader_model_dir
    from rearqa.reader.config import ReaderConfig, resolve_adapter
    from rearqa.reader.finetuned import vllm_engine

    config = ReaderConfig(method="rag-ft", engine="vllm", dtype=args.dtype)
    model_dir, shipped = reader_model_dir(), resolve_adapter(config)
    with tempfile.TemporaryDirectory(prefix="bench-vllm-lora-") as scratch:
        legs = [(f"lora: {r.stem}", recipe_adapter(r, model_dir, Path(scratch) / r.stem)) for r in args.recipes] \
            or [("lora", shipped)]
        legs.append(("merged", shipped))
        results = []
        for label, adapter in legs:
            mode = "merged" if label == "merged" else "lora"  # reader.vllm_adapter
            rank = {}
            if mode == "lora":
                adapter, rank = served(adapter, model_dir, Path(scratch) / "exports")
            start = time.perf_counter()  # the merged leg's first run includes writing its checkpoint
            engine = vllm_engine(dataclasses.replace(config, vllm_adapter=mode), model_dir, adapter)
            started = time.perf_counter() - start
            try:
                results.append({**bench(label, engine, config, args), **rank, "startup_s": started})
            finally:
                engine.close()
    report = {"adapter": "recipes" if args.recipes else str(shipped),
              "recipes": [str(r) for r in args.recipes], "base_model": str(model_dir), "dtype": args.dtype,
              "tokens_per_prompt": args.tokens, "machine": platform.processor() or platform.machine(),
              "date": time.strftime("%Y-%m-%d"), "results": results}
    merged = results[-1]
    print(f"| engine | served rank | batch of {args.n}: tokens/s | one at a time: tokens/s | "
          "batch / merged | one at a time / merged | start-up (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        rank = f"{r['rank']} (vLLM {r['vllm_max_lora_rank']})" if "rank" in r else "-"
        print(f"| {r['engine']} | {rank} | {r['batch']['tokens_per_s']:.1f} | {r['single']['tokens_per_s']:.1f} | "
              f"{r['batch']['tokens_per_s'] / merged['batch']['tokens_per_s']:.2f} | "
              f"{r['single']['tokens_per_s'] / merged['single']['tokens_per_s']:.2f} | {r['startup_s']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
