"""The training-free cost of the MASA transform on the reader: perplexity against storage saved.

    python scripts/masa_table.py --from checkpoints/rag-ft-smollm2 --atoms 30 20 10 \
        --out docs/results/masa/table-ragft.json

For the reader `--from` (as `rearqa convert --from` takes it) and each atom count S: the
parameters its shared projections (q, k, v, o unless `--projections`) keep in the compact form
(atoms + coefficients) against the original, the whole model's, the bytes in bf16, the share of
each projection type's weight energy the S atoms keep and the mean per-layer relative weight
error, and the perplexity of the rebuilt reader (what is served) on held-out corpus samples.
The held-out draw and the scoring are kv_merge_table.py's (the first 32 held-out samples of the
seed-0 corpus split, so the original's perplexity is that table's), one SVD per projection type
is shared by every S, and S = the layer count is the identity check (its perplexity must be the
original's).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kv_merge_table import params, scored  # noqa: E402  (scripts/: the same scoring as kv_merge's table)

from rearqa import assets  # noqa: E402
from rearqa.app.convert_cmd import load_source  # noqa: E402
from rearqa.asset_paths import corpus_file  # noqa: E402
from rearqa.reader.backbone import get_transform  # noqa: E402
from rearqa.reader.backbone.base import dtype_bytes  # noqa: E402
from rearqa.reader.backbone.masa.config import ATTENTION_PROJECTIONS, MasaConfig  # noqa: E402
from rearqa.reader.backbone.masa.convert import decompose, projection_modules  # noqa: E402
from rearqa.reader.backbone.transmla.calibration import corpus_calibration  # noqa: E402

BYTES = dtype_bytes(torch.bfloat16)  # the reader is saved and served in bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="checkpoints/rag-ft-smollm2")
    ap.add_argument("--atoms", type=int, nargs="+", default=[30, 20, 10])
    ap.add_argument("--projections", default=",".join(ATTENTION_PROJECTIONS))
    ap.add_argument("--calib", type=int, default=128, help="calibration samples of the draw (unused "
                    "by masa; kept so the held-out samples are kv_merge_table's)")
    ap.add_argument("--heldout", type=int, default=32, help="held-out samples scored")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    home = assets.ensure_prepared(progress=False)
    model, tokenizer, rear, source = load_source(args.source, home)
    if rear is not None:
        raise SystemExit("--from a REAR checkpoint: convert it with rearqa convert; this table "
                         "scores the causal LM alone")
    _, heldout, record = corpus_calibration(tokenizer, corpus_file(home), args.calib, args.tokens,
                                            args.seed, heldout_samples=args.heldout)
    start = time.time()
    rows = [{"setting": "original", "params": params(model), **scored(model, heldout)}]
    print(f"original: ppl {rows[0]['ppl']:.3f} ({time.time() - start:.0f} s)", flush=True)
    transform = get_transform("masa")
    projections = [p for p in args.projections.split(",") if p]
    decompositions = {p: decompose([m.weight for m in projection_modules(model, p)]) for p in projections}
    for atoms in args.atoms:
        cfg = MasaConfig(atoms=atoms, projections=projections, seed=args.seed)
        cfg.check_model(model.config)
        rebuilt = transform.apply(model, None, cfg, decompositions=decompositions)
        report = rebuilt.masa_report
        kinds = report["projections"]
        row = {"setting": f"masa {atoms} atoms", "atoms": atoms, "params": params(rebuilt),
               **report["params"], **scored(rebuilt, heldout),
               "energy_kept": {p: r["energy_kept"] for p, r in kinds.items()},
               "mean_relative_error": {p: sum(r["relative_error"]) / len(r["relative_error"])
                                       for p, r in kinds.items()},
               "relative_error": {p: r["relative_error"] for p, r in kinds.items()}}
        print(f"{row['setting']}: ppl {row['ppl']:.3f} ({time.time() - start:.0f} s)", flush=True)
        rows.append(row)
        del rebuilt
    for row in rows:
        row["ppl_ratio_vs_original"] = row["ppl"] / rows[0]["ppl"]
    print_table(rows, model.config.num_hidden_layers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"source": source, "heldout": {"calibration_draw": record.to_dict(),
                                                                  "samples": heldout.shape[0], "tokens": args.tokens},
                                    "projections": projections, "bytes_per_value": BYTES,
                                    "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict], layers: int) -> None:
    head = ["setting", "shared params (M) orig -> compact", "saved of shared", "model params stored (M)",
            "MB stored (bf16)", "saved of model", "energy kept q/k/v/o", "rel. weight error q/k/v/o",
            "ppl", "ppl x"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        if "atoms" not in r:
            print("| " + " | ".join([r["setting"], "-", "-", f"{r['params'] / 1e6:.2f}",
                                     f"{r['params'] * BYTES / 1e6:.1f}", "-", "-", "-", f"{r['ppl']:.3f}",
                                     "1.000"]) + " |")
            continue
        name = r["setting"] + (" (= L, identity)" if r["atoms"] == layers else "")
        energy = "/".join(f"{v:.3f}" for v in r["energy_kept"].values())
        error = "/".join(f"{v:.3f}" for v in r["mean_relative_error"].values())
        print("| " + " | ".join([
            name, f"{r['shared_original'] / 1e6:.2f} -> {r['shared_compact'] / 1e6:.2f}",
            f"{r['shared_saving']:.1%}", f"{r['model_compact'] / 1e6:.2f}",
            f"{r['model_compact'] * BYTES / 1e6:.1f}", f"{r['model_saving']:.1%}", energy, error,
            f"{r['ppl']:.3f}", f"{r['ppl_ratio_vs_original']:.3f}"]) + " |")


if __name__ == "__main__":
    main()
