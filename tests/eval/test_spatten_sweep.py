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


def load_sweep():
    """scripts/spatten_sweep.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("spatten_sweep", ROOT / "scripts" / "spatten_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    return sweep


@pytest.mark.parametrize("split", ["nq-dev-select", "tqa-dev-select"])
def test_the_committed_sweep_is_what_the_archived_runs_give(split, tmp_path, monkeypatch):
    sweep = load_sweep()
    out = tmp_path / "sweep.json"
    monkeypatch.setattr(sys, "argv", ["spatten_sweep.py", "--baseline", str(SWEEP / "none" / split),
                                      *(str(SWEEP / b / split) for b in BUDGETS), "--out", str(out)])
    sweep.main()
    strip = lambda table: [{k: v for k, v in row.items() if k != "run"} for row in table["runs"]]  # noqa: E731
    committed = json.loads((SWEEP / f"sweep-{split.split('-')[0]}-dev-select.json").read_text())
    again = json.loads(out.read_text())
    assert strip(again) == strip(committed) and again["baseline_em"] == committed["baseline_em"]
    assert [row["backbone"].split("tokens=")[1][:3] for row in again["runs"]] == ["0.8"] + ["0.6"] * 4


def test_the_rule_picks_each_sessions_budget_from_its_committed_sweeps(capsys):
    """The dev-select rule, as a function: on session 14's sweeps it picks that session's budget
    (4 questions lost of 272; tokens=0.8 saves too little), on session 17's (all of dev-select) the
    budget frozen in configs/backbone/spatten-ragft.yaml now."""
    import yaml

    from rearqa.reader.backbone.spatten.config import parse_budgets

    sweep = load_sweep()

    def chosen(folder: Path) -> str:
        return sweep.choose([json.loads((folder / f"sweep-{s}-dev-select.json").read_text()) for s in ("nq", "tqa")])

    assert parse_budgets(chosen(SWEEP)) == parse_budgets("spatten:tokens=0.6,start_layer=8")
    reasons = capsys.readouterr().err
    assert "tokens=0.8" in reasons and "not on every split or under 30%" in reasons
    assert "4 questions lost of 272" in reasons
    frozen = yaml.safe_load((ROOT / "configs" / "backbone" / "spatten-ragft.yaml").read_text())
    assert parse_budgets(chosen(SWEEP.parent / "select-cpu17")) == parse_budgets(frozen["reader"]["backbone"])
    assert "-1 questions lost of 764" in capsys.readouterr().err
