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


def kernel_part(tmp_path, part: str) -> dict | None:
    """`kernel_bench --smoke --parts PART`'s result where the kernels run (TRITON_INTERPRET=1 with
    triton); None in the main venv, after checking that the part (and its summaries) stayed empty."""
    out, module = tmp_path / "bench.json", bench()
    assert module.main(["--smoke", "--parts", part, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    if module.kernels(smoke=True)[1] is None:  # no kernel: no rows
        assert all(result[key] == [] for key in result if key.startswith(part))
        return None
    return result


def test_the_smoke_run_writes_its_json_with_the_references(tmp_path):
    out, module = tmp_path / "bench.json", bench()
    assert module.main(["--smoke", "--parts", "mla", "mla_sweep", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] and result["mla"] and all(r["reference_ms"] > 0 for r in result["mla"])
    if module.kernels(smoke=True)[0] is None:  # the main venv: references only, no sweep
        assert result["mla_sweep"] == [] and result["mla_sweep_best"] == []
    else:  # TRITON_INTERPRET=1 with triton: the smoke sweep's two combinations ran, neither the default
        assert len(result["mla_sweep"]) == 2 and all("graph_ms" in r for r in result["mla_sweep"])
        assert [r["default"] for r in result["mla_sweep"]] == [False, False]
        (best,) = result["mla_sweep_best"]
        assert best["default_ms"] is None


def test_the_sweep_reports_the_fastest_tiles_beside_the_default_and_keeps_failures():
    rows = [{"shape": "llama3-8b 512+64", "batch": 16, "context": 32768, "num_splits": None, "block_n": 32,
             "num_warps": 8, "num_stages": 2, "default": True, "graph_ms": 0.6, "copy_fraction": 0.33},
            {"shape": "llama3-8b 512+64", "batch": 16, "context": 32768, "num_splits": 66, "block_n": 16,
             "num_warps": 4, "num_stages": 3, "default": False, "graph_ms": 0.3, "copy_fraction": 0.66},
            {"shape": "llama3-8b 512+64", "batch": 16, "context": 32768, "num_splits": 8, "block_n": 64,
             "num_warps": 8, "num_stages": 4, "default": False, "error": "OutOfResources: shared memory"}]
    (best,) = bench().best_of_sweep(rows)
    assert best["best"] == {"num_splits": 66, "block_n": 16, "num_warps": 4, "num_stages": 3}
    assert (best["best_ms"], best["default_ms"]) == (0.3, 0.6)


def test_the_lora_rows_are_also_timed_on_rotated_copies(tmp_path):
    out, module = tmp_path / "bench.json", bench()
    assert module.main(["--smoke", "--parts", "lora", "--ranks", "16", "--rows", "3", "--reps", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["lora"]
    assert rows and all(r["sets"] >= 1 and r["base_sets_ms"] > 0 and r["unfused_sets_ms"] > 0 for r in rows)
    if module.kernels(smoke=True)[1] is not None:  # TRITON_INTERPRET=1: the kernel, with B loaded early too
        assert all(r["fused_early_b_over_base_sets"] == r["fused_early_b_sets_ms"] / r["base_sets_ms"] for r in rows)
    # the smoke sizes are tiny, so the L2-sized budget asks for the most copies allowed
    assert {r["sets"] for r in rows} == {32}


def test_the_lora_sweep_times_each_combination_on_rotated_copies(tmp_path):
    if (result := kernel_part(tmp_path, "lora_sweep")) is None:  # lora_sweep and lora_sweep_best empty
        return
    # TRITON_INTERPRET=1 with triton: two points, the default and one more combination each
    rows = result["lora_sweep"]
    assert len(rows) == 4 and [r["default"] for r in rows] == [True, False, True, False]
    assert all(r["sets"] == 32 and r["fused_ms"] > 0 and r["base_ms"] > 0 for r in rows)
    assert [b["rows"] for b in result["lora_sweep_best"]] == [3, 40]


def test_the_gemm_part_splits_the_fused_ops_distance(tmp_path):
    if (result := kernel_part(tmp_path, "gemm")) is None:
        return
    (row,) = result["gemm"]  # TRITON_INTERPRET=1 with triton: one tiny point
    assert row["gemm_errors"] == 0 and row["gemm_best"]["block_m"] == 16
    assert row["fused_over_gemm_default"] == row["fused_ms"] / row["gemm_default_ms"]
    assert row["persistent_core_errors"] == 0 and row["persistent_fused_errors"] == 0
    assert row["persistent_fused_over_base"] == row["persistent_fused_ms"] / row["base_ms"]


def test_the_split_part_checks_the_split_form_before_timing_it(tmp_path):
    if (result := kernel_part(tmp_path, "split")) is None:
        return
    (row,) = result["split"]  # TRITON_INTERPRET=1 with triton: one tiny decode point
    assert row["split_checked"] == 1 and row["split_errors"] == 0 and "split_wrong" not in row
    assert row["split_over_base"] == row["split_ms"] / row["base_ms"] and row["split_best"]["block_n"] == 16
