"""scripts/kernel_bench.py's plumbing on the CPU (its numbers come from the GPU machine)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location("kernel_bench", ROOT / "scripts" / "kernel_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_run_writes_its_json_with_the_references(tmp_path):
    out = tmp_path / "bench.json"
    assert bench().main(["--smoke", "--parts", "mla", "mla_sweep", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] and result["mla"] and all(r["reference_ms"] > 0 for r in result["mla"])
    assert result["mla_sweep"] == [] and result["mla_sweep_best"] == []  # no kernel without triton


def test_the_sweep_reports_the_fastest_tiles_beside_the_default_and_keeps_failures():
    rows = [{"shape": "llama3-8b 512+64", "batch": 16, "context": 32768, "num_splits": None, "block_n": 32,
             "num_warps": 8, "num_stages": 2, "graph_ms": 0.6, "copy_fraction": 0.33},
            {"shape": "llama3-8b 512+64", "batch": 16, "context": 32768, "num_splits": 66, "block_n": 16,
             "num_warps": 4, "num_stages": 3, "graph_ms": 0.3, "copy_fraction": 0.66},
            {"shape": "llama3-8b 512+64", "batch": 16, "context": 32768, "num_splits": 8, "block_n": 64,
             "num_warps": 8, "num_stages": 4, "error": "OutOfResources: shared memory"}]
    (best,) = bench().best_of_sweep(rows)
    assert best["best"] == {"num_splits": 66, "block_n": 16, "num_warps": 4, "num_stages": 3}
    assert (best["best_ms"], best["default_ms"]) == (0.3, 0.6)
