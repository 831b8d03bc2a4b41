"""TPLA's answer quality against full MLA: EM / F1 / answer-contained of one converted MLA reader
decoding with full MLA and with TPLA (g shards, per latent rotation), on the same questions.

    python scripts/tpla_em.py --reader /tmp/tpla-192 --split nq-test --limit 50 --answerable-only \
        --out docs/results/tpla/em-transmla192.json

Each variant is the reader loaded by path through the transformers engine with reader.tp_shards
and reader.tp_rotation set (full MLA: tp_shards 0), read over the retrieval snapshot's top-k
passages and scored by the project's evaluation runner (rearqa.eval.runner.run_eval): each run
dir under `--runs` holds its rows.jsonl and report.json, so every number traces to its questions.
Rotations invalid for the reader's latent (Hadamard on a kv_lora_rank that is not a power of two)
are recorded as skipped with the reason. PCA is fitted on the conversion's own calibration text
(backbone.json's record) unless `--tp-calib` names a calibration file. `--adapter` reads a rag-ft
LoRA adapter over the converted reader (method rag-ft); without it the untuned rag prompt.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.config_errors import ConfigError  # noqa: E402
from rearqa.eval.bundle import Snapshot, SnapshotPipeline  # noqa: E402
from rearqa.eval.rear_runs import SnapshotRunConfig, snapshot_dataset  # noqa: E402
from rearqa.eval.runner import EvalSettings, run_eval  # noqa: E402
from rearqa.reader.config import ReaderConfig  # noqa: E402

METRICS = ("em", "f1", "contained")


def build_reader(config: ReaderConfig, reader_dir: str, adapter: str | None):
    """The reader of `config` over `reader_dir`: FinetunedReader with an adapter, else BaselineReader."""
    if adapter:
        from rearqa.reader.finetuned import FinetunedReader

        return FinetunedReader(config, reader_dir, adapter, device="cpu")
    from rearqa.reader.baseline import BaselineReader

    return BaselineReader(config, reader_dir)


def run_variant(name: str, config: ReaderConfig, args, snapshot: Snapshot, dataset) -> dict:
    """One variant through the eval runner; its aggregate, backbone label and run dir."""
    start = time.perf_counter()
    reader = build_reader(config, str(args.reader), args.adapter)
    load_s = time.perf_counter() - start
    weights = {"base_model": str(args.reader), **({"adapter": str(args.adapter)} if args.adapter else {})}
    pipeline = SnapshotPipeline(snapshot, [args.split], reader, SnapshotRunConfig(config, str(snapshot.dir), weights))
    out_dir = args.runs / name
    settings = EvalSettings(dataset=args.split, method=config.method, retriever=args.retriever, k=args.k,
                            limit=args.limit, batch_size=args.batch_size, out_dir=out_dir, seed=args.seed)
    report = run_eval(pipeline, settings, progress=True, overwrite=True, dataset=dataset)
    overall = report["aggregate"]["all"]
    return {"variant": name, "tp_shards": config.tp_shards,
            "tp_rotation": config.tp_rotation if config.tp_shards else None,
            "backbone": report["backbone"], "n": report["n_rows"],
            **{m: overall[m] for m in METRICS}, "seconds_per_question": report["seconds_per_question"],
            "load_seconds": load_s, "run_dir": str(out_dir)}


def predictions(run_dir: str) -> dict[str, dict]:
    rows = (json.loads(line) for line in (Path(run_dir) / "rows.jsonl").read_text().splitlines() if line.strip())
    return {row["id"]: row for row in rows}


def paired(full: dict, variant: dict) -> dict:
    """Per question against full MLA: same text, and EM gained / lost (ids kept, to trace them)."""
    a, b = predictions(full["run_dir"]), predictions(variant["run_dir"])
    ids = [i for i in a if i in b]
    changed = [i for i in ids if a[i]["prediction"] != b[i]["prediction"]]
    return {"same_prediction": 1 - len(changed) / len(ids), "changed_ids": changed,
            "em_gained_ids": [i for i in ids if b[i]["em"] > a[i]["em"]],
            "em_lost_ids": [i for i in ids if b[i]["em"] < a[i]["em"]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader", type=Path, required=True, help="a converted MLA reader dir (backbone.json)")
    ap.add_argument("--adapter", default=None, help="a rag-ft LoRA adapter over --reader (method rag-ft)")
    ap.add_argument("--snapshot", type=Path, default=Path("build/bundle"), help="retrieval snapshot dir")
    ap.add_argument("--split", default="nq-test")
    ap.add_argument("--limit", type=int, default=50, help="questions (after --answerable-only)")
    ap.add_argument("--answerable-only", action="store_true")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rotations", nargs="+", default=["none", "hadamard", "pca"])
    ap.add_argument("--tp-calib", default="", help="pca: a calibration file; default: the conversion's own text")
    ap.add_argument("--retriever", default="dense")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    # One thread: on the shared 2-core machine two OpenMP threads are slower (scripts/tpla_error.py).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=Path("runs/tpla-em"), help="eval run dirs, one per variant")
    ap.add_argument("--out", type=Path, default=Path("docs/results/tpla/em.json"))
    args = ap.parse_args()

    snapshot = Snapshot(args.snapshot)
    dataset = snapshot_dataset(snapshot, args.split, None, args.answerable_only)
    dataset.examples = dataset.examples[:args.limit]
    method = "rag-ft" if args.adapter else "rag"
    base = dict(method=method, dtype=args.dtype, threads=args.threads, batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens, adapter=args.adapter or "", tp_calib=args.tp_calib)
    rows = [run_variant("full-mla", ReaderConfig(**base), args, snapshot, dataset)]
    print_row(rows[0])
    for rotation in args.rotations:
        name = f"tpla{args.shards}-{rotation}"
        try:
            row = run_variant(name, ReaderConfig(**base, tp_shards=args.shards, tp_rotation=rotation),
                              args, snapshot, dataset)
        except ConfigError as exc:  # e.g. Hadamard on a latent whose width is not a power of two
            row = {"variant": name, "tp_shards": args.shards, "tp_rotation": rotation, "skipped": str(exc)}
        else:
            row.update(paired(rows[0], row))
        rows.append(row)
        print_row(row)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "reader": str(args.reader), "adapter": args.adapter, "method": method, "snapshot": str(args.snapshot),
        "split": args.split, "answerable_only": args.answerable_only, "limit": args.limit,
        "question_ids": [e.id for e in dataset.examples], "retriever": args.retriever, "k": args.k,
        "dtype": args.dtype, "threads": args.threads, "max_new_tokens": args.max_new_tokens,
        "cpu_cores": "2 (shared machine)", "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_row(row: dict) -> None:
    if "skipped" in row:
        print(f"{row['variant']}: skipped ({row['skipped']})", flush=True)
    else:
        print(f"{row['variant']}: EM {row['em']:.3f} F1 {row['f1']:.3f} contained {row['contained']:.3f} "
              f"({row['n']} q, {row['seconds_per_question']:.2f} s/q)", flush=True)


def print_table(rows: list[dict]) -> None:
    head = ["variant", "backbone", "n", "EM", "F1", "contained", "same text as full MLA", "EM +/-", "s/q"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        if "skipped" in r:
            cells = [r["variant"], "skipped: " + r["skipped"].split(";")[0]] + ["n/a"] * 7
        else:
            same = f"{r['same_prediction']:.3f}" if "same_prediction" in r else "1"
            delta = (f"+{len(r['em_gained_ids'])}/-{len(r['em_lost_ids'])}" if "em_gained_ids" in r else "-")
            cells = [r["variant"], r["backbone"], str(r["n"]), f"{r['em']:.3f}", f"{r['f1']:.3f}",
                     f"{r['contained']:.3f}", same, delta, f"{r['seconds_per_question']:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
