"""The training-free cost of KV-head merging on the reader: KV bytes, parameters, perplexity.

    python scripts/kv_merge_table.py --from checkpoints/rag-ft-smollm2 --kv-heads 3 1 \
        --out runs/kv_merge/table.json

For the reader `--from` (as `rearqa convert --from` takes it) and each KV-head count: the KV bytes
per token (bf16) the converted reader caches, its parameter count, its perplexity on held-out
corpus passages (never the text it was calibrated on) and the share of the key and value energy
its merge keeps (mean over layers; per-layer values in the JSON). Ratios are against the
unconverted reader measured in the same run; a count equal to the model's (3 for SmolLM2) is the
identity check (its perplexity must match the original's).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa import assets  # noqa: E402
from rearqa.app.convert_cmd import load_source  # noqa: E402
from rearqa.asset_paths import corpus_file  # noqa: E402
from rearqa.reader.backbone import get_transform  # noqa: E402
from rearqa.reader.backbone.base import dense_kv_bytes_per_token  # noqa: E402
from rearqa.reader.backbone.kv_merge.config import KVMergeConfig  # noqa: E402
from rearqa.reader.backbone.transmla.calibration import corpus_calibration, sample_nll  # noqa: E402
from rearqa.reader.backbone.transmla.convert import collect_kv_moments  # noqa: E402


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def scored(model, heldout: torch.Tensor) -> dict:
    """Perplexity on the held-out samples and each sample's mean NLL (traceable per sample)."""
    nll = sample_nll(model, heldout)
    return {"ppl": torch.exp(nll.mean()).item(), "sample_nll": nll.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="checkpoints/rag-ft-smollm2")
    ap.add_argument("--kv-heads", type=int, nargs="+", default=[3, 1])
    ap.add_argument("--calib", type=int, default=128, help="calibration samples of --tokens")
    ap.add_argument("--heldout", type=int, default=32, help="held-out samples scored")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    home = assets.ensure_prepared(progress=False)
    model, tokenizer, rear, source = load_source(args.source, home)
    if rear is not None:
        raise SystemExit("--from a REAR checkpoint: convert it with rearqa convert; this table "
                         "scores the causal LM alone")
    calib, heldout, record = corpus_calibration(tokenizer, corpus_file(home), args.calib,
                                                args.tokens, args.seed, heldout_samples=args.heldout)
    dense = dense_kv_bytes_per_token(model.config, torch.bfloat16)
    rows = [{"setting": f"original ({model.config.num_key_value_heads} KV heads)", "kv_bytes": dense,
             "params": params(model), **scored(model, heldout)}]
    print(f"original: ppl {rows[0]['ppl']:.3f}, {dense} KV bytes/token (bf16)", flush=True)
    transform = get_transform("kv_merge")
    moments = collect_kv_moments(model, calib)  # one calibration pass shared by every count
    for kv_heads in args.kv_heads:
        cfg = KVMergeConfig(kv_heads=kv_heads, calib_passages=args.calib, calib_tokens=args.tokens,
                            seed=args.seed)
        cfg.check_model(model.config)
        merged = transform.apply(model, calib, cfg, record=record, moments=moments)
        layers = merged.kv_merge_report["layers"]
        row = {"setting": f"kv_merge {model.config.num_key_value_heads}->{kv_heads}",
               "kv_bytes": transform.kv_bytes_per_token(merged.config, torch.bfloat16),
               "params": params(merged), **scored(merged, heldout),
               "key_energy": sum(r["key_energy"] for r in layers) / len(layers),
               "value_energy": sum(r["value_energy"] for r in layers) / len(layers), "layers": layers}
        print(f"{row['setting']}: ppl {row['ppl']:.3f}", flush=True)
        rows.append(row)
        del merged
    for row in rows:
        row["kv_ratio_vs_original"] = dense / row["kv_bytes"]
        row["ppl_ratio_vs_original"] = row["ppl"] / rows[0]["ppl"]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"source": source, "calibration": record.to_dict(),
                                    "heldout_samples": heldout.shape[0], "tokens": args.tokens,
                                    "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict]) -> None:
    head = ["setting", "KV B/token (bf16)", "x smaller", "params (M)", "ppl", "ppl x",
            "key energy kept", "value energy kept"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        energy = [f"{r[k]:.3f}" if k in r else "-" for k in ("key_energy", "value_energy")]
        print("| " + " | ".join([r["setting"], f"{r['kv_bytes']:,}", f"{r['kv_ratio_vs_original']:.2f}",
                                 f"{r['params'] / 1e6:.2f}", f"{r['ppl']:.3f}",
                                 f"{r['ppl_ratio_vs_original']:.3f}", *energy]) + " |")


if __name__ == "__main__":
    main()
