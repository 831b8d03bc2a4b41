"""docs/backbone.md's SpAtten GPU sweep: scripts/spatten_sweep.py on the archived runs (report.json
without its rows, rows.jsonl.gz beside it) writes the committed tables again."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "docs" / "results" / "spatten" / "sweep-gpu14"
BUDGETS = ["tokens_0.8", "tokens_0.6", "tokens_0.6_start_layer_8", "tokens_0.6_heads_0.8", "tokens_0.6_key_bits_4"]


@pytest.mark.parametrize("split", ["nq-dev-select", "tqa-dev-select"])
def test_the_committed_sweep_is_what_the_archived_runs_give(split, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("spatten_sweep", ROOT / "scripts" / "spatten_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    out = tmp_path / "sweep.json"
    monkeypatch.setattr(sys, "argv", ["spatten_sweep.py", "--baseline", str(SWEEP / "none" / split),
                                      *(str(SWEEP / b / split) for b in BUDGETS), "--out", str(out)])
    sweep.main()
    strip = lambda table: [{k: v for k, v in row.items() if k != "run"} for row in table["runs"]]  # noqa: E731
    committed = json.loads((SWEEP / f"sweep-{split.split('-')[0]}-dev-select.json").read_text())
    again = json.loads(out.read_text())
    assert strip(again) == strip(committed) and again["baseline_em"] == committed["baseline_em"]
    assert [row["backbone"].split("tokens=")[1][:3] for row in again["runs"]] == ["0.8"] + ["0.6"] * 4
