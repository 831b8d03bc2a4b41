"""scripts/loraprune_heads.py: where LoRAPrune's removed KV groups rank by composition strength."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(ROOT / "scripts"))  # it imports spatten_heads beside it, as when run
    try:
        spec = importlib.util.spec_from_file_location("loraprune_heads", ROOT / "scripts" / "loraprune_heads.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_ranks_on_a_constructed_case(script):
    # 3 layers x 4 heads, 2 KV groups of 2 heads; the last layer has no later reader (NaN).
    strength = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.7, 0.2, 0.2], [np.nan] * 4])
    rows = script.removed_ranks(strength, [[1], [1], [0]], kv_heads=2)
    assert [(r["layer"], r["removed"], r["rank"]) for r in rows] == [(0, [0], [0]), (1, [0], [1])]
    assert rows[1]["strength"] == [0.6, 0.2]
    assert script.at_least(0, 5, 0.3) == pytest.approx(1.0)
    assert script.at_least(2, 2, 0.5) == pytest.approx(0.25)


def test_head_only_masks_on_a_constructed_case(script):
    # 3 layers, 3 KV groups, 2 kept; layer 2 has no strength (no later reader): LoRAPrune's groups
    strength = np.array([[0.2] * 3 + [0.1] * 3 + [0.3] * 3, [0.5] * 3 + [0.4] * 3 + [0.6] * 3, [np.nan] * 9])
    mask = {"kv_heads": 3, "intermediate": 4, "kv_keep": [[0, 1], [1, 2], [0, 2]],
            "mlp_keep": [[0, 1], [2, 3], [1, 3]], "format": 1}
    masks = script.head_only_masks(mask, script.removed_ranks(strength, mask["kv_keep"], kv_heads=3))
    assert masks["loraprune-heads"]["kv_keep"] == [[0, 1], [1, 2], [0, 2]]
    assert masks["drop-weakest"]["kv_keep"] == [[0, 2], [0, 2], [0, 2]]
    assert masks["drop-strongest"]["kv_keep"] == [[0, 1], [0, 1], [0, 2]]
    assert all(m["mlp_keep"] == [[0, 1, 2, 3]] * 3 for m in masks.values())
    assert mask["mlp_keep"] == [[0, 1], [2, 3], [1, 3]]  # the input is not changed


def test_the_committed_comparison_is_what_the_shipped_mask_gives(script, tmp_path, monkeypatch):
    out = tmp_path / "cmp.json"
    mask = ROOT / "checkpoints" / "healed" / "ragft-loraprune-2-1024" / "mask.json"
    monkeypatch.setattr(sys, "argv", ["loraprune_heads.py", str(mask), "--scores",
                                      str(ROOT / "docs" / "results" / "heads" / "scores.json"), "--out", str(out)])
    script.main()
    committed = json.loads((ROOT / "docs" / "results" / "heads" / "loraprune-vs-composition.json").read_text())
    again = json.loads(out.read_text())
    assert again["summary"] == committed["summary"] and again["layers"] == committed["layers"]
    assert again["summary"]["removed_is_strongest"] == 17
