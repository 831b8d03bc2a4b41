"""Training throughput of REAR and its baselines: tokens/s, padding, s/step, memory and MFU.

For each method, builds the real task from a retrieval snapshot and the base model (the bundled
SmolLM2 by default) with the given settings, runs --warmup optimiser steps and then --steps
measured ones with data loading included (the task's own batch() path), synchronising only at the
ends (rearqa.training.benchmark says what each number is). Prints a table, writes JSON.

    python scripts/bench_train.py --device cpu --steps 3 --warmup 1 --max-questions 8 \\
        --batch 1 --grad-accum 1 --set group_size=4 --out /tmp/bench_cpu.json     # rehearsal
    python scripts/bench_train.py --methods rear rag-ft --batch 16 --grad-accum 1 \\
        --random-weights --max-questions 600 --out /tmp/bench_h200.json   # docs/benchmarks.md (e)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from rearqa.training.benchmark import H200_BF16_DENSE_TFLOPS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["rear", "rag-ft"],
                        help="training methods to measure (rear, rag-ft, closed-book-ft)")
    parser.add_argument("--snapshot", default="build/bundle", help="retrieval snapshot dir")
    parser.add_argument("--base-model", default="", help="default: the bundled SmolLM2")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch", type=int, help="train.batch (REAR groups per micro-batch)")
    parser.add_argument("--grad-accum", type=int, help="train.grad_accum")
    parser.add_argument("--row-chunks", type=int, help="train.row_chunks")
    parser.add_argument("--base-dtype", help="train.base_dtype: auto | float32 | bfloat16")
    parser.add_argument("--dtype", help="train.dtype (autocast): auto | float32 | bfloat16")
    parser.add_argument("--max-questions", type=int, default=0,
                        help="first N questions of each split (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig field, VALUE read as YAML (repeatable)")
    parser.add_argument("--warmup", type=int, default=2, help="optimiser steps not measured")
    parser.add_argument("--steps", type=int, default=10, help="measured optimiser steps")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                        help="the device's peak FLOP/s for MFU, in TFLOP/s (H200 dense bf16)")
    parser.add_argument("--random-weights", action="store_true",
                        help="the base model's config and tokenizer with random weights (a machine "
                             "without the weights; throughput does not depend on their values)")
    parser.add_argument("--no-sync-count", action="store_true",
                        help="skip the extra step that counts host syncs (CUDA)")
    parser.add_argument("--out", default="bench_train.json", help="JSON output file")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict:
    """TrainConfig keywords from the flags (unset flags keep the config's defaults)."""
    import yaml

    from rearqa.config_errors import ConfigError

    values = {"base_model": args.base_model, "snapshot": args.snapshot, "device": args.device,
              "batch": args.batch, "grad_accum": args.grad_accum, "row_chunks": args.row_chunks,
              "base_dtype": args.base_dtype, "dtype": args.dtype,
              "max_questions": args.max_questions,
              "threads": args.threads}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: give KEY=VALUE, e.g. --set lora_r=16")
        values[key] = yaml.safe_load(value)
    return {k: v for k, v in values.items() if v is not None}


def random_weights_copy(base_model: str, out: Path) -> str:
    """`base_model`'s config and tokenizer with freshly initialised weights, saved under `out`."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rearqa.training.config import TrainConfig

    source = TrainConfig(base_model=base_model).base_model_dir()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.float32)
    model.save_pretrained(out)
    for path in source.iterdir():  # tokenizer, chat template, generation config
        weights = "safetensors" in path.name or path.name.endswith(".bin")
        if path.is_file() and not weights and path.name != "config.json":
            shutil.copy(path, out / path.name)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    import torch

    from rearqa.environment import set_offline_defaults
    from rearqa.training.benchmark import bench_method, table
    from rearqa.training.config import TrainConfig

    set_offline_defaults()
    args = parse_args(argv)
    settings = overrides(args)
    scratch = tempfile.TemporaryDirectory(prefix="bench-train-")
    if args.random_weights:
        settings["base_model"] = random_weights_copy(args.base_model, Path(scratch.name) / "base")
    rows = []
    for method in args.methods:
        config = TrainConfig.from_yaml(None, method=method, out=str(Path(scratch.name) / "out"),
                                       **settings)
        rows.append(bench_method(config, args.warmup, args.steps, args.peak_tflops,
                                 count_syncs=not args.no_sync_count))
        print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    report = {"argv": sys.argv[1:] if argv is None else argv, "peak_tflops": args.peak_tflops,
              "random_weights": args.random_weights,
              "mfu_formula": "tokens_per_s * (4 * frozen_params + 6 * trainable_params) / "
                             "(peak_tflops * 1e12)",
              "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "runs": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    scratch.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
