"""The training-free cost of X-EcoMLA on the reader: KV bytes and held-out perplexity.

    python scripts/xecomla_table.py --from checkpoints/rag-ft-smollm2 \
        --settings e0.99+32 e0.95+32 96+64 128+32 --out docs/results/xecomla/table.json

For the reader `--from` (as `rearqa convert --from` takes it) and each setting (`R+D`: a fixed
kv_lora_rank R with rope D; `eE+D`: per-layer ranks by the energy rule at E), the KV bytes per token
in bf16 the export declares (per-layer ranks zero-padded to the largest) and what the unpadded
ranks would cost, the ranks, and the perplexity on the same held-out corpus samples
scripts/transmla_table.py reports on (same calibration/held-out draw and split, so the numbers sit
beside TransMLA's; X-EcoMLA itself reads no calibration text). X-EcoMLA's init is meant to be
distilled afterwards: these are its numbers before any training.
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
from rearqa.reader.backbone.base import dense_kv_bytes_per_token, dtype_bytes  # noqa: E402
from rearqa.reader.backbone.transmla.calibration import corpus_calibration, perplexity  # noqa: E402
from rearqa.reader.backbone.xecomla.config import XEcoMLAConfig  # noqa: E402


def parse_setting(text: str) -> XEcoMLAConfig:
    """"96+64" (fixed rank + rope) or "e0.99+32" (energy rule + rope)."""
    rank, _, rope = text.partition("+")
    if rank.startswith("e"):
        return XEcoMLAConfig(kv_lora_rank=None, energy=float(rank[1:]), rope_dim=int(rope))
    return XEcoMLAConfig(kv_lora_rank=int(rank), rope_dim=int(rope))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="checkpoints/rag-ft-smollm2")
    ap.add_argument("--settings", nargs="+", default=["e0.99+32", "e0.95+32", "96+64", "128+32"])
    ap.add_argument("--calib", type=int, default=128, help="as transmla_table.py, for the same split")
    ap.add_argument("--heldout", type=int, default=64, help="held-out samples; the second half is scored")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    home = assets.ensure_prepared(progress=False)
    model, tokenizer, rear, source = load_source(args.source, home)
    if rear is not None:
        raise SystemExit("--from a REAR checkpoint: this table scores the causal LM alone")
    _, heldout, _ = corpus_calibration(tokenizer, corpus_file(home), args.calib, args.tokens,
                                       args.seed, heldout_samples=args.heldout)
    report = heldout[args.heldout // 2:]
    dense = dense_kv_bytes_per_token(model.config, torch.bfloat16)
    base_ppl = perplexity(model, report)
    print(f"original: ppl {base_ppl:.3f}, {dense} KV bytes/token (bf16)", flush=True)
    rows = [{"setting": "original (GQA)", "kv_bytes": dense, "kv_bytes_unpadded": dense,
             "ppl": base_ppl}]
    transform = get_transform("xecomla")
    for text in args.settings:
        cfg = parse_setting(text)
        mla = transform.apply(model, None, cfg)
        conv = mla.xecomla_report
        row = {"setting": text, "settings": cfg.__dict__, "layer_ranks": conv["layer_ranks"],
               "kv_lora_rank": conv["kv_lora_rank"],
               "kv_bytes": transform.kv_bytes_per_token(mla.config, torch.bfloat16),
               "kv_bytes_unpadded": conv["latent_values_per_token_unpadded"] * dtype_bytes(torch.bfloat16),
               "mean_svd_energy": sum(r["svd_energy"] for r in conv["layers"]) / len(conv["layers"]),
               "mean_rope_key_loss": sum(r["rope_key_loss"] for r in conv["layers"]) / len(conv["layers"]),
               "ppl": perplexity(mla, report)}
        print(f"{text}: ppl {row['ppl']:.2f}, rank {row['kv_lora_rank']} (layers "
              f"{min(row['layer_ranks'])}..{max(row['layer_ranks'])}), KV {row['kv_bytes']} "
              f"({row['kv_bytes_unpadded']} unpadded)", flush=True)
        rows.append(row)
        del mla
    for row in rows:
        row["kv_ratio_vs_gqa"] = dense / row["kv_bytes"]
        row["ppl_ratio_vs_gqa"] = row["ppl"] / base_ppl
    print("| setting | kv_lora_rank (layer min..max) | KV B/token bf16 (padded) | unpadded "
          "| x smaller | ppl | ppl x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ranks = r.get("layer_ranks")
        span = f"{r['kv_lora_rank']} ({min(ranks)}..{max(ranks)})" if ranks else "-"
        print(f"| {r['setting']} | {span} | {r['kv_bytes']:,} | {r['kv_bytes_unpadded']:,} | "
              f"{r['kv_ratio_vs_gqa']:.2f} | {r['ppl']:.2f} | {r['ppl_ratio_vs_gqa']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"source": source, "heldout_report_samples": report.shape[0],
                                    "tokens": args.tokens, "seed": args.seed, "rows": rows},
                                   indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
