"""Perplexity of readers loaded by path on the held-out corpus samples of the training-free
tables (scripts/transmla_table.py: seed 0, 128 calibration + 64 held-out samples x 256 tokens,
the second 32 held-out samples reported), for docs/backbone.md's before/after-distillation rows.

    python scripts/healed_ppl.py --reader original=checkpoints/rag-ft-smollm2 \
        --reader "96+64=/tmp/unhealed96" --reader "96+64 healed=/tmp/healed96" \
        --out docs/results/distill/ppl.json

A reader is NAME=DIR: a converted reader dir (backbone.json), a transformers checkpoint, or a
PEFT adapter (merged into the base model), loaded in float32 (rearqa.app.convert_cmd.load_source).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa import assets  # noqa: E402
from rearqa.asset_paths import corpus_file  # noqa: E402


def load(path: str, home: Path) -> torch.nn.Module:
    from rearqa.app.convert_cmd import load_source
    from rearqa.reader.backbone.loading import load_causal_lm

    if (Path(path) / "backbone.json").is_file():
        return load_causal_lm(Path(path), torch.float32)
    return load_source(path, home)[0]


def main() -> None:
    from transformers import AutoTokenizer

    from rearqa.reader.backbone.transmla.calibration import corpus_calibration, perplexity

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reader", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--heldout", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    home = assets.ensure_prepared(progress=False)
    tokenizer = AutoTokenizer.from_pretrained(assets.reader_model_dir(home))
    _, heldout, record = corpus_calibration(tokenizer, corpus_file(home), args.calib, args.tokens,
                                            args.seed, heldout_samples=args.heldout)
    report = heldout[args.heldout // 2:]
    rows = []
    print(f"{'reader':28s} {'ppl':>9s}")
    for spec in args.reader:
        name, _, path = spec.partition("=")
        model = load(path, home).eval()
        ppl = perplexity(model, report)
        rows.append({"reader": name, "path": path, "ppl": ppl})
        print(f"{name:28s} {ppl:9.2f}", flush=True)
        del model
    if args.out:
        args.out.write_text(json.dumps({"calibration": record.to_dict(), "samples": len(report),
                                        "tokens": args.tokens, "readers": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
