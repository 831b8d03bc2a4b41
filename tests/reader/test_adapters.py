"""The adapter wing's seam: the registry, the shared settings, plain LoRA's wrapping."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import ADAPTERS, get_adapter, wrap
from rearqa.reader.adapters.config import AdapterSettings
from rearqa.reader.adapters.lora.config import LoraSettings
from rearqa.testing import tiny_llama


def test_registry_lists_the_methods():
    assert get_adapter("lora").name == "lora"
    with pytest.raises(ConfigError, match=r"unknown adapter method 'ia3'; valid methods are \['lora'"):
        get_adapter("ia3")
    for name in ADAPTERS:
        method = get_adapter(name)
        assert method.name == name and issubclass(method.config_cls, AdapterSettings)


@pytest.mark.parametrize("bad", [dict(r=0), dict(r=1.5), dict(alpha=0), dict(dropout=1.0),
                                 dict(target=[])])
def test_bad_settings_name_the_value(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        LoraSettings(**bad)


def test_lora_wraps_every_linear_layer_but_the_output_layer():
    model = tiny_llama(64, tied=False)
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    peft_model = wrap("lora", model, LoraSettings(r=2, alpha=4, dropout=0.0))
    wrapped = {name.removeprefix("base_model.model.") for name, m in peft_model.named_modules()
               if hasattr(m, "lora_A")}
    assert wrapped == linear - {"lm_head"}
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():  # B starts at zero: the wrapped model computes what the base did
        assert torch.equal(peft_model(ids).logits, tiny_llama(64, tied=False)(ids).logits)


def test_settings_of_another_type_are_refused():
    class Other(AdapterSettings):
        pass

    with pytest.raises(TypeError, match="takes LoraSettings"):
        wrap("lora", tiny_llama(64), Other())


def test_lora_reaches_the_dense_mlp_of_a_converted_reader(tmp_path):
    """A converted reader is a dense DeepseekV3; PEFT 0.21 would remap its MLP targets to fused
    expert tensors it lacks (reader.adapters.peft_compat). LoRA lands on every linear layer, and
    the saved adapter merges back (merge_lora) to the same logits."""
    from rearqa.reader.finetuned import merge_lora
    from rearqa.testing import tiny_deepseek

    peft_model = wrap("lora", tiny_deepseek(seed=1), LoraSettings(r=4, alpha=8)).eval()
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in peft_model.named_parameters()
               if ".lora_A" in n}
    assert {"gate_proj", "up_proj", "down_proj", "o_proj", "kv_b_proj"} <= wrapped
    assert not peft_model.peft_config["default"].target_parameters
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    ids = torch.randint(0, 20, (1, 9))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = merge_lora(tiny_deepseek(seed=1), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_a_target_the_model_lacks_is_refused_with_the_names_it_has():
    model = tiny_llama(64)
    with pytest.raises(ConfigError, match=r"\['qkv_proj'\] not in LlamaForCausalLM: its linear layers "
                                          r".*\['down_proj', 'gate_proj', 'k_proj', 'o_proj'"):
        wrap("lora", model, LoraSettings(r=2, target=["q_proj", "qkv_proj"]))
    with pytest.raises(ConfigError, match="matches no module"):
        wrap("lora", model, LoraSettings(r=2, target=r".*\.c_attn"))
    peft_model = wrap("lora", model, LoraSettings(r=2, target=["self_attn.q_proj", "v_proj"]))
    wrapped = {name.rsplit(".", 1)[-1] for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}


RECIPES_DIR = __import__("pathlib").Path(__file__).parents[2] / "configs" / "adapters"
RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
ALL_RECIPES = sorted(RECIPES_DIR.rglob("*.yaml"))  # budget/: scripts/adapter_budget.py's choices


@pytest.mark.parametrize("path", ALL_RECIPES, ids=[str(p.relative_to(RECIPES_DIR)) for p in ALL_RECIPES])
def test_every_adapter_recipe_trains_a_config_and_wraps_a_llama(path):
    from rearqa.training.config import TrainConfig, read_adapter_recipe

    config = TrainConfig(method="rag-ft", **read_adapter_recipe(path))
    peft_model = wrap(config.adapter, tiny_llama(64), config.adapter_settings())
    wrapped = {name.rsplit(".", 1)[-1] for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    expected = config.lora_target if isinstance(config.lora_target, list) else \
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert wrapped == set(expected)


def test_recipes_are_named_and_hold_adapter_keys_only(tmp_path):
    from rearqa.training.config import read_adapter_recipe

    assert {"lora-all-linear", "lora-attention", "hydra", "dvlora", "gdvlora", "blocklora", "masa"} <= \
        {p.stem for p in RECIPES}
    with pytest.raises(ConfigError, match=r"recipe 'nope': .* the recipes are \[.*'lora-attention'"):
        read_adapter_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("adapter: lora\nlr: 1.0e-3\n")
    with pytest.raises(ConfigError, match=r"\['lr'\] are not recipe keys"):
        read_adapter_recipe(bad)
