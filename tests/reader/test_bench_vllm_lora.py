"""scripts/bench_vllm_lora.py --recipes: each equal-budget recipe gives a saved adapter whose every
adapter tensor is nonzero (a zero B would time a trivially cheap update), which reloads as the
recipe's method and exports to the plain LoRA vLLM is given (no vLLM here: the timing itself runs
by hand, docs/adapters.md)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rearqa.testing import tiny_llama
from rearqa.training.config import read_adapter_recipe

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_vllm_lora", ROOT / "scripts" / "bench_vllm_lora.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

RECIPES = sorted((ROOT / "configs" / "adapters" / "budget").glob("*.yaml"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base")
    tiny_llama(64, tied=False, hidden_size=16, seed=3).save_pretrained(path)
    return path


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_adapter_is_nonzero_and_exports(base, tmp_path, recipe):
    adapter = bench.recipe_adapter(recipe, base, tmp_path / "adapter")
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert tensors and all(t.any() for t in tensors.values())
    method = json.loads((adapter / "adapter_config.json").read_text()).get("rearqa_method") or "lora"
    assert method == read_adapter_recipe(recipe)["adapter"]
    served, rank = bench.served(adapter, base, tmp_path / "exports")
    config = json.loads((served / "adapter_config.json").read_text())
    assert "rearqa_method" not in config and config["r"] == rank["rank"]
    assert rank["vllm_max_lora_rank"] >= rank["rank"]
