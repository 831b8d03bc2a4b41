"""Decode speed and KV memory: a GQA reader against its MLA conversion, random weights in the real
shapes (speed depends on shapes, not values).

    python scripts/bench_mla_decode.py --preset smollm2 --device cuda --contexts 4096 16384 32768 \
        --batch 1 32 --out docs/results/transmla/decode-h200-smollm2.json

Presets: `smollm2` (30 layers, hidden 576, 9 query heads, 3 KV heads of 64; MLA 96+64) and
`llama3-8b-attn` (Llama-3-8B's attention: hidden 4096, 32 query heads, 8 KV heads of 128; MLA
512+64; `--layers` of them, a small MLP). For each context and batch the cache is filled with
random values of that length (no prefill: only decode is timed), then `--steps` greedy decode
steps run on the transformers engine (MLAAttention's absorbed path for MLA; sdpa for GQA), CUDA
synchronised around the timing. KV memory is the bytes the cache tensors hold. transformers'
DynamicCache appends with torch.cat, copying the cache every step, for both models alike; the
ratios compare like with like, the absolute tokens/s are this engine's, not a serving kernel's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.reader.backbone.transmla.modeling import install_mla, measured_kv_bytes  # noqa: E402

PRESETS = {
    "smollm2": {"layers": 30, "hidden": 576, "heads": 9, "kv_heads": 3, "head_dim": 64,
                "intermediate": 1536, "vocab": 49152, "rank": 96, "rope": 64},
    "llama3-8b-attn": {"layers": 4, "hidden": 4096, "heads": 32, "kv_heads": 8, "head_dim": 128,
                       "intermediate": 1024, "vocab": 1024, "rank": 512, "rope": 64},
}


def models(shape: dict):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, LlamaConfig, LlamaForCausalLM

    common = dict(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                  intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                  num_attention_heads=shape["heads"], max_position_embeddings=65536,
                  tie_word_embeddings=False)
    gqa = LlamaForCausalLM(LlamaConfig(num_key_value_heads=shape["kv_heads"], head_dim=shape["head_dim"],
                                       **common))
    config = DeepseekV3Config(num_key_value_heads=shape["heads"], first_k_dense_replace=shape["layers"],
                              q_lora_rank=None, kv_lora_rank=shape["rank"], qk_rope_head_dim=shape["rope"],
                              qk_nope_head_dim=shape["head_dim"], v_head_dim=shape["head_dim"],
                              rope_interleave=True, **common)
    config.latent_norm = False
    return gqa, install_mla(DeepseekV3ForCausalLM(config))


def filled_cache(model, batch: int, context: int, device, dtype):
    """A DynamicCache holding `context` random tokens per layer in the model's cache layout."""
    from transformers import DynamicCache

    cache, cfg = DynamicCache(), model.config
    for layer in range(cfg.num_hidden_layers):
        if hasattr(cfg, "kv_lora_rank"):  # MLA: the latent and the rotary key, one "head"
            shapes = [(batch, 1, context, cfg.kv_lora_rank), (batch, 1, context, cfg.qk_rope_head_dim)]
        else:
            shapes = [(batch, cfg.num_key_value_heads, context, cfg.head_dim)] * 2
        k, v = (torch.randn(s, device=device, dtype=dtype) for s in shapes)
        cache.update(k, v, layer)
    return cache


@torch.no_grad()
def decode(model, batch: int, context: int, steps: int, device, dtype) -> dict:
    cache = filled_cache(model, batch, context, device, dtype)
    kv_bytes = measured_kv_bytes(cache)
    token = torch.randint(0, model.config.vocab_size, (batch, 1), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_mem = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    timed = 0.0
    for step in range(steps + 2):  # two warm-up steps
        position = torch.full((batch, 1), context + step, device=device)
        sync()
        start = time.perf_counter()
        out = model(input_ids=token, position_ids=position, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        sync()
        if step >= 2:
            timed += time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base_mem if device.type == "cuda" else None
    return {"tokens_per_s": batch * steps / timed, "ms_per_step": 1000 * timed / steps,
            "kv_bytes": kv_bytes, "kv_bytes_per_token": kv_bytes / (batch * context),
            "peak_extra_bytes": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--rope", type=int, default=None)
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 32768])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=1, help="alternating GQA/MLA runs; the median is kept")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = dict(PRESETS[args.preset])
    for key in ("layers", "rank", "rope"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    gqa, mla = (m.to(device=device, dtype=dtype).eval() for m in models(shape))
    rows = []
    for context in args.contexts:
        for batch in args.batch:
            row = {"context": context, "batch": batch}
            runs: dict[str, list] = {"gqa": [], "mla": []}
            for _ in range(args.repeats):  # GQA, MLA, GQA, MLA, ...: drifting load hits both
                for name, model in (("gqa", gqa), ("mla", mla)):
                    try:
                        runs[name].append(decode(model, batch, context, args.steps, device, dtype))
                    except torch.OutOfMemoryError:
                        runs[name].append(None)
                        torch.cuda.empty_cache()
            for name, found in runs.items():  # the repeat with the median speed
                done = sorted((r for r in found if r), key=lambda r: r["tokens_per_s"])
                row[name] = done[len(done) // 2] if len(done) == len(found) else None
            if row["gqa"] and row["mla"]:
                row["speed_ratio"] = row["mla"]["tokens_per_s"] / row["gqa"]["tokens_per_s"]
                row["kv_ratio"] = row["gqa"]["kv_bytes"] / row["mla"]["kv_bytes"]
                if args.repeats > 1:  # each repeat's MLA/GQA ratio, adjacent runs paired
                    row["speed_ratios"] = [m["tokens_per_s"] / g["tokens_per_s"]
                                           for g, m in zip(runs["gqa"], runs["mla"])]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{args.preset}: {shape}, {args.dtype} on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    print("| context | batch | GQA tok/s | MLA tok/s | MLA/GQA speed | GQA KV MiB | MLA KV MiB | KV x smaller |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        g, m = r["gqa"], r["mla"]
        cell = lambda d, k, f: "OOM" if d is None else f.format(d[k] / (2**20 if "bytes" in k else 1))  # noqa: E731
        print(f"| {r['context']} | {r['batch']} | {cell(g, 'tokens_per_s', '{:.1f}')} | "
              f"{cell(m, 'tokens_per_s', '{:.1f}')} | {r.get('speed_ratio', float('nan')):.2f} | "
              f"{cell(g, 'kv_bytes', '{:.0f}')} | {cell(m, 'kv_bytes', '{:.0f}')} | {r.get('kv_ratio', float('nan')):.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"preset": args.preset, "shape": shape, "dtype": args.dtype,
                                    "device": str(device), "steps": args.steps, "repeats": args.repeats,
                                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                                    "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
