"""Issue 15's comparison table (scripts/adapter_compare.py) on constructed records: rows slimmed
losslessly for what the table reads, seeds averaged per question, and no verdict before 3 seeds."""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "adapter_compare.py"
spec = importlib.util.spec_from_file_location("adapter_compare", SCRIPT)
ac = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ac)


def _full_row(qid: str, em: float, answerable: bool = True) -> dict:
    return {"id": qid, "answerable": answerable, "prediction": "x", "em": em, "f1": em, "contained": em,
            "retrieved_ids": ["p1", "p2"], "retrieved_titles": ["a", "b"], "retrieved_scores": [.5, .4],
            "retrieved_has_answer": [True, False],
            "citations": [{"id": "p1", "relevance": .9, "judgment": "relevant", "answer": "x"},
                          {"id": "p2", "relevance": .1, "judgment": "irrelevant", "answer": "y"}]}


def _unit(root: Path, method: str, seed: int, ems: dict[str, list[float]] | None) -> None:
    train = root / f"train-rear-{method}-s{seed}"
    (train / "train").mkdir(parents=True)
    (train / "unit.json").write_text(json.dumps({"status": "done", "selection": {"em": .08, "relevance_auc": .87}}))
    (train / "train" / "train_config.json").write_text(json.dumps({"batch": 32, "grad_accum": 1}))
    (train / "train" / "summary.json").write_text(json.dumps({"steps": 300, "tokens": 10, "seconds": 171.0}))
    (train / "train.log").write_text("rear: 300 steps ... peak GPU memory 70.1 GiB\n")
    for split, values in (ems or {}).items():
        rows = root / f"eval-test-{method}-s{seed}" / split / "rear" / "rows.jsonl.gz"
        rows.parent.mkdir(parents=True)
        lines = [_full_row(f"q{i}", em) for i, em in enumerate(values)] + [_full_row("u", 1.0, False)]
        rows.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in lines).encode()))


def test_slim_keeps_what_the_table_reads_and_is_idempotent():
    row = ac.slim_row(_full_row("q", 1.0))
    assert row["relevance"] == [.9, .1] and row["has_answer"] == [True, False]
    assert row["judgment"] == ["relevant", "irrelevant"] and row["em"] == 1.0 and row["answerable"]
    assert "retrieved_titles" not in row and "citations" not in row
    assert ac.slim_row(row) == row


def test_methods_are_judged_on_seed_means_only_with_three_seeds(tmp_path):
    n = 400
    good = {"nq-test": [1.0] * (n // 2) + [0.0] * (n // 2), "tqa-test": [1.0] * (n // 2) + [0.0] * (n // 2)}
    worse = {"nq-test": [0.0] * n, "tqa-test": good["tqa-test"]}
    for seed in range(3):
        _unit(tmp_path, "lora", seed, good)
        _unit(tmp_path, "hydra", seed, worse)
    _unit(tmp_path, "masa", 0, good)
    _unit(tmp_path, "masa", 1, good)
    _unit(tmp_path, "dvlora", 0, None)  # trained, not yet tested
    ac.slim(tmp_path)
    runs = ac.collect(tmp_path)
    assert runs["lora"][0]["nq-test_n"] == n  # the unanswerable row is left out
    assert runs["lora"][0]["step_s"] == pytest.approx(0.57) and runs["lora"][0]["peak_gib"] == 70.1
    pairs = {p["method"]: p for p in ac.compare(runs)}
    hydra = pairs["hydra"]
    assert hydra["complete"] and hydra["sets"]["nq-test"]["diff"] == pytest.approx(-0.5)
    assert hydra["sets"]["tqa-test"]["diff"] == pytest.approx(0.0)
    assert hydra["as_good"] is False and hydra["better"] == {"nq-test": False, "tqa-test": False}
    assert hydra["worse"] == {"nq-test": True, "tqa-test": False}  # NQ's interval lies below 0
    assert ac.verdict(hydra["better"]) == "nq no, tqa no"
    assert ac.verdict(hydra["better"], hydra["worse"]) == "nq no (worse), tqa no"
    assert pairs["masa"]["complete"] is False and pairs["masa"]["as_good"] is None
    assert pairs["masa"]["worse"] is None
    assert pairs["dvlora"]["sets"] == {} and pairs["dvlora"]["as_good"] is None and pairs["dvlora"]["worse"] is None


def test_a_control_has_its_methods_budget():
    budgets = {"lora": 100, "blocklora": 200, "blocklora-input": 300}
    assert ac.control_budget(budgets, "lora-mb32") == 100
    assert ac.control_budget(budgets, "blocklora-input") == 300
    assert ac.control_budget(budgets, "blocklora-input-outscale") == 300  # the longest owner
    assert ac.control_budget(budgets, "blocklora-outscale") == 200
    assert ac.control_budget(budgets, "masa") is None


def test_a_runs_gpu_comes_from_its_unit_or_the_machines_file():
    machines = {"m-old": "NVIDIA H100"}
    assert ac.card({"machine": "m-old"}, machines) == "H100"
    assert ac.card({"machine": "m-old", "gpu": "NVIDIA H200"}, machines) == "H200"  # the unit's own
    assert ac.card({"machine": "m-new"}, machines) == "-"
    assert ac.card({"gpu": "none"}, {}) == "-"


def test_the_seed_resampled_interval_sits_beside_the_verdicts(tmp_path):
    n = 1200
    half = [1.0] * (n // 2) + [0.0] * (n // 2)
    for seed in range(3):
        _unit(tmp_path, "lora", seed, {"nq-test": half, "tqa-test": half})
    # blocklora's seeds: one 30 questions better, one 30 worse, one equal: the seed means equal lora's
    up, down = list(half), list(half)
    up[n // 2:n // 2 + 30] = [1.0] * 30
    down[:30] = [0.0] * 30
    for seed, ems in enumerate((half, up, down)):
        _unit(tmp_path, "blocklora", seed, {"nq-test": ems, "tqa-test": half})
    entry = ac.compare(ac.collect(tmp_path))[0]
    nq, tqa = entry["sets"]["nq-test"], entry["sets"]["tqa-test"]
    assert nq["diff"] == pytest.approx(0.0) and tqa["diff"] == 0.0
    assert nq["seeds_high"] - nq["seeds_low"] > 3 * (nq["high"] - nq["low"])
    assert (tqa["seeds_low"], tqa["seeds_high"]) == (0.0, 0.0)
    assert entry["as_good"] is True  # the verdict is the issue's: questions resampled only


def test_each_methods_seeds_are_paired_against_each_other(tmp_path):
    n = 400
    half = [1.0] * (n // 2) + [0.0] * (n // 2)
    better = [1.0] * (n // 2 + 40) + [0.0] * (n // 2 - 40)  # 40 more questions right: +10 points
    _unit(tmp_path, "masa", 0, {"nq-test": half, "tqa-test": half})
    _unit(tmp_path, "masa", 1, {"nq-test": better, "tqa-test": half})
    _unit(tmp_path, "masa", 2, None)  # trained, not yet tested: in no pair
    _unit(tmp_path, "lora", 0, {"nq-test": half, "tqa-test": half})  # one tested seed: no pair
    pairs = ac.seed_pairs(ac.collect(tmp_path))
    assert [(p["method"], p["seeds"]) for p in pairs] == [("masa", [0, 1])]
    nq, tqa = pairs[0]["sets"]["nq-test"], pairs[0]["sets"]["tqa-test"]
    assert nq["n"] == n and nq["diff"] == pytest.approx(0.1) and nq["low"] > 0  # the later seed minus the earlier
    assert (tqa["diff"], tqa["low"], tqa["high"]) == (0.0, 0.0, 0.0)
