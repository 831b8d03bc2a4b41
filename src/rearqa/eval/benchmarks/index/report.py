"""The index benchmark's report: the markdown table, the verdict against the target, the machine
it ran on, and the JSON + markdown files.
"""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rearqa.eval.benchmarks.index.config import TARGET_RECALL, TARGET_SPEEDUP
from rearqa.files import atomic_write_text


def markdown_table(rows: Sequence[dict[str, Any]], k: int, header: bool = True) -> str:
    columns = (("dataset", "dataset", "{}"), ("index", "index", "{}"), ("setting", "setting", "{}"),
               ("build s", "build_s", "{:.1f}"), ("peak MB", "peak_mb", "{:,.0f}"),
               ("index MB", "index_mb", "{:,.1f}"), ("QPS@1", "qps_batch1", "{:,.0f}"),
               ("timed@1", "timed_batch1", "{}"), ("QPS@64", "qps_batch64", "{:,.0f}"),
               (f"recall@{k}", f"recall@{k}", "{:.3f}"), ("x Flat@1", "speedup_batch1", "{:.1f}x"))
    lines = [f"| {' | '.join(fmt.format(row[key]) for _, key, fmt in columns)} |" for row in rows]
    if header:
        lines[:0] = [f"| {' | '.join(name for name, _, _ in columns)} |",
                     f"|{'|'.join('---' for _ in columns)}|"]
    return "\n".join(lines)


def verdict(rows: Sequence[dict[str, Any]], dataset: str, n: int, k: int) -> str:
    """Which HNSW setting, if any, reaches recall@k >= 0.95 at >= 10x Flat's batch-1 queries/s."""
    key, rows = f"recall@{k}", [r for r in rows if r["dataset"] == dataset]
    head = (f"{dataset} ({n:,} vectors), target recall@{k} >= {TARGET_RECALL} at >= "
            f"{TARGET_SPEEDUP:g}x Flat's QPS@1")
    meets = [r for r in rows if r[key] >= TARGET_RECALL and r["speedup_batch1"] >= TARGET_SPEEDUP]
    hnsw = [r for r in rows if r["family"] == "HNSW"]
    if not hnsw:
        return f"{head}: no HNSW index was run."

    def name(r: dict[str, Any]) -> str:
        return f"{r['index']} {r['setting']} (recall {r[key]:.3f}, {r['speedup_batch1']:.1f}x)"

    hnsw_meets = [r for r in meets if r["family"] == "HNSW"]
    if hnsw_meets:
        return f"{head}: MET by {name(max(hnsw_meets, key=lambda r: r['speedup_batch1']))}."
    accurate = [r for r in hnsw if r[key] >= TARGET_RECALL]
    why = (f"the fastest HNSW setting with enough recall is "
           f"{name(max(accurate, key=lambda r: r['speedup_batch1']))}" if accurate
           else f"the best HNSW recall is {name(max(hnsw, key=lambda r: r[key]))}")
    others = ", ".join(name(r) for r in meets) or "none"
    return f"{head}: NOT MET; {why}. Settings that meet it: {others}."


def machine_info(threads: int) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "load_average_at_start": os.getloadavg(), "threads": threads,
            "faiss": faiss.__version__, "faiss_build": faiss.get_compile_options(),
            "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def write_report(report: dict[str, Any], out: Path, k: int) -> None:
    """JSON with every row and per-query recall; a markdown table beside it (same name, .md)."""
    m, lines = report["machine"], []
    for name, s in report["datasets"].items():
        lines.append(f"- {name}: {s['description']}; {s['n_base']:,} base vectors, "
                     f"{s['n_queries']} queries.")
        if "mixture" in s:
            mix, fid = s["mixture"], s["mixture"]["fidelity"]
            lines.append(f"  Mixture: {mix['components']} components, full covariance in the top "
                         f"{mix['pca_dim']} PCA directions, seed {mix['seed']}. Nearest-neighbour "
                         f"cosine 1st/{k}th: corpus {fid['corpus']['nn1']:.2f}/"
                         f"{fid['corpus'][f'nn{k}']:.2f}, synthetic {fid['synthetic']['nn1']:.2f}/"
                         f"{fid['synthetic'][f'nn{k}']:.2f}.")
    md = "\n".join([
        f"{m['cpu']}, {m['threads']} threads, faiss {m['faiss']}. recall@{k} against Flat; "
        "QPS@1 timed over timed@1 single queries; peak MB = RSS growth while building.",
        *lines, "", markdown_table(report["rows"], k), "",
        *(f"- {line}" for line in report["verdict"].values()),
        *(f"- WARNING: {w}" for w in [report.get("warning")] if w),
        "", f"Command: `{report['command']}`", ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), md)

