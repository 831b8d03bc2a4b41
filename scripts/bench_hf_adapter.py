"""Speed of a fine-tuned reader on engine hf by how its adapter runs: merged into the weights
(reader.hf_adapter 'merged', the default), unmerged through the fused LoRA op ('unmerged':
adapters/unmerged.py; the Triton kernel on CUDA, its torch reference elsewhere), and unmerged
through PEFT's own layers (what the op replaces: three products a layer).

    python scripts/bench_hf_adapter.py --device cpu --threads 2 --out docs/results/adapters/hf-adapter-cpu.json
    python scripts/bench_hf_adapter.py --device cuda --random --batch 1 32 --out $OUT/hf-adapter.json

The shipped rag-ft adapter (plain LoRA r 16 on every linear layer) over the bundled SmolLM2, each
model built as the engine builds it (adapter loaded in float32, merged or fused, then cast to
--dtype). --random (the GPU machine, where nothing is staged): the same shapes with random
weights, SmolLM2-135M's config and a plain LoRA r 16 (alpha 32) on every linear layer but the
output layer, B drawn from N(0, 0.02^2), saved to a scratch directory first. Per batch size:
prefill, one forward over batch x --prompt tokens (tokens/s), and decode, `generate` of exactly
--new tokens greedily after that prompt (new tokens/s, the prefill included).
Token ids are drawn at random (seed 0): the speed depends on the shapes, not the text. Each figure
is the median of --repeats runs after one warm-up; CUDA is synchronised around each. The ratios are
against the merged model measured in the same run. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MODES = ("merged", "unmerged", "peft")
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                    pad_token_id=2, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})


def random_reader(root: Path) -> tuple[Path, Path]:
    """A SmolLM2-135M-shaped base with random weights and a random plain LoRA r 16 over it, saved
    under `root`: (model dir, adapter dir)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rearqa.reader.adapters import wrap
    from rearqa.reader.adapters.lora.config import LoraSettings

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    base.save_pretrained(root / "base")
    peft_model = wrap("lora", base, LoraSettings(r=16, alpha=32, dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    peft_model.save_pretrained(root / "adapter")
    return root / "base", root / "adapter"


def build(mode: str, model_dir: Path, adapter: Path, dtype: torch.dtype, device: str):
    from transformers import AutoModelForCausalLM

    from rearqa.reader.adapters import load_adapter
    from rearqa.reader.finetuned import merge_lora

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = load_adapter(base, adapter) if mode == "peft" else merge_lora(base, adapter, mode)
    return model.eval().to(device=device, dtype=dtype)


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, batch: int, prompt: int, new: int, device: str, repeats: int) -> dict:
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        prefill = timed(lambda: model(input_ids=ids, attention_mask=mask), device, repeats)
        decode = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                                              min_new_tokens=new, do_sample=False,
                                              pad_token_id=model.config.eos_token_id), device, repeats)
    return {"batch": batch, "prefill_s": prefill, "prefill_tokens_per_s": batch * prompt / prefill,
            "generate_s": decode, "new_tokens_per_s": batch * new / decode}


def main(argv: list[str] | None = None) -> dict:
    from rearqa.asset_paths import reader_model_dir
    from rearqa.reader.adapters.unmerged import FusedLoraLinear
    from rearqa.reader.config import default_adapter_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="base checkpoint (default: the bundled reader)")
    ap.add_argument("--adapter", type=Path, default=None, help="adapter dir (default: the shipped rag-ft)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="", help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--random", action="store_true",
                    help="random weights in the real shapes (SmolLM2-135M, LoRA r 16), nothing read")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    if args.random:
        scratch = tempfile.TemporaryDirectory(prefix="bench-hf-adapter-")
        model_dir, adapter = random_reader(Path(scratch.name))
    else:
        model_dir, adapter = args.model or reader_model_dir(), args.adapter or default_adapter_dir("rag-ft")
    rows = []
    for mode in args.modes:
        model = build(mode, model_dir, adapter, dtype, args.device)
        fused = sum(isinstance(m, FusedLoraLinear) for m in model.modules())
        for batch in args.batch:
            rows.append({"mode": mode, "fused_layers": fused,
                         **measure(model, batch, args.prompt, args.new, args.device, args.repeats)})
        del model
    merged = {r["batch"]: r for r in rows if r["mode"] == "merged"}
    for r in rows:
        if r["batch"] in merged:
            r["prefill_over_merged"] = r["prefill_s"] / merged[r["batch"]]["prefill_s"]
            r["generate_over_merged"] = r["generate_s"] / merged[r["batch"]]["generate_s"]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"{device_name}, {dtype}, prompt {args.prompt}, {args.new} new tokens, threads "
          f"{torch.get_num_threads()}; time over the merged model's in the same run")
    print("| mode | batch | fused layers | prefill tok/s | x merged | generate new tok/s | x merged |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['batch']} | {r['fused_layers']} | {r['prefill_tokens_per_s']:.0f} | "
              f"{r.get('prefill_over_merged', float('nan')):.2f} | {r['new_tokens_per_s']:.1f} | "
              f"{r.get('generate_over_merged', float('nan')):.2f} |")
    result = {"device": device_name, "dtype": str(dtype), "threads": torch.get_num_threads(),
              "weights": "random (SmolLM2-135M shapes, LoRA r 16)" if args.random else "real",
              "prompt": args.prompt, "new": args.new, "repeats": args.repeats,
              "model": str(model_dir), "adapter": str(adapter), "torch": torch.__version__, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
