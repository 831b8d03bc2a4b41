"""The LoRA family's own layers (hydra, dvlora, blocklora): merge, unmerge, delta weight, export
to plain LoRA, reload in a fresh process. Every test starts from a non-identity adapter (B != 0,
vectors and gate away from their init), so a dropped tensor or a wrong fold shows. Block-LoRA's
own checks are in test_blocklora.py."""
from __future__ import annotations

import json

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import get_adapter, load_adapter, wrap
from rearqa.reader.adapters.blocklora.config import BlockLoraSettings
from rearqa.reader.adapters.dvlora.config import DVLoraSettings
from rearqa.reader.adapters.export import export_lora
from rearqa.reader.adapters.hydra.config import HydraSettings
from rearqa.testing import logits_in_a_fresh_process, moved_off_init, tiny_llama

IDS = torch.tensor([[1, 5, 7, 9, 11, 13, 2, 40]])
CASES = {
    "hydra": ("hydra", HydraSettings(r=4, alpha=8, dropout=0.0, sequential_r=2, sequential_alpha=3,
                                     init="random")),
    "dvlora": ("dvlora", DVLoraSettings(r=4, alpha=8, dropout=0.0, init="random")),
    "gdvlora-scalar": ("dvlora", DVLoraSettings(r=4, alpha=8, dropout=0.0, gate="scalar", init="random")),
    "blocklora": ("blocklora", BlockLoraSettings(r=4, alpha=8, dropout=0.0, blocks=2, init="random")),
    "blocklora-input": ("blocklora", BlockLoraSettings(r=4, alpha=8, dropout=0.0, blocks=2, init="random",
                                                       share="input")),
}
EXPORTED_RANK = {"hydra": 4 + 2, "dvlora": 4, "gdvlora-scalar": 4, "blocklora": 4 // 2, "blocklora-input": 4}


def base_model():
    return tiny_llama(64, tied=False, hidden_size=16, seed=3)


def adapted(case: str):
    """The tiny Llama with the adapter of `case`, every adapter tensor moved off its init."""
    name, settings = CASES[case]
    return moved_off_init(wrap(name, base_model(), settings).eval())


def lora_layers(model):
    from rearqa.reader.adapters.custom import RearLoraLinear

    return [m for m in model.modules() if isinstance(m, RearLoraLinear)]


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


@pytest.mark.parametrize("case", list(CASES))
def test_merge_then_unmerge_restores_the_base_weight(case):
    model = adapted(case)
    layers = lora_layers(model)
    assert len(layers) == 14  # 7 linear layers x 2 decoder layers, the output layer left out
    with torch.no_grad():
        before = [layer.base_layer.weight.clone() for layer in layers]
        deltas = [layer.get_delta_weight("default") for layer in layers]
        model.merge_adapter()
        for layer, w0, delta in zip(layers, before, deltas):
            assert delta.abs().max() > 1e-3  # the adapter really changes the weight
            torch.testing.assert_close(layer.base_layer.weight - w0, delta, rtol=0, atol=1e-6)
        model.unmerge_adapter()
        for layer, w0 in zip(layers, before):
            torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_the_merged_model_computes_what_the_adapter_model_does(case):
    model = adapted(case)
    with torch.no_grad():
        expected = model(IDS).logits
        assert (expected - base_model()(IDS).logits).abs().max() > 1e-2
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(IDS).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_the_exported_plain_lora_merges_to_the_same_model(case, tmp_path):
    """The export is a plain PEFT LoRA dir: PEFT loads it with no registration."""
    from peft import PeftModel

    model = adapted(case)
    out = export_lora(model, tmp_path / "plain")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == EXPORTED_RANK[case]
    assert "rearqa_method" not in config and config["lora_alpha"] == config["r"]
    plain = PeftModel.from_pretrained(base_model(), out)
    assert type(plain.get_base_model().model.layers[0].mlp.up_proj).__module__ == "peft.tuners.lora.layer"
    with torch.no_grad():
        expected = model.merge_and_unload()(IDS).logits
        torch.testing.assert_close(plain.merge_and_unload()(IDS).logits, expected, rtol=0, atol=1e-5)


def test_an_input_dependent_gate_runs_but_neither_merges_nor_exports(tmp_path):
    model = wrap("dvlora", base_model(), DVLoraSettings(r=4, alpha=8, dropout=0.0, gate="input",
                                                        init="random")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_gate_proj" in name:
                param.normal_(0, 0.5)
        assert (model(IDS).logits - base_model()(IDS).logits).abs().max() > 1e-3
    with pytest.raises(ValueError, match="gate depends on the input"):
        export_lora(model, tmp_path / "plain")
    with pytest.raises(ValueError, match="cannot merge"):
        model.merge_and_unload()


@pytest.mark.parametrize("case", ["hydra", "gdvlora-scalar", "blocklora"])
def test_a_saved_adapter_reloads_in_a_fresh_process(case, tmp_path):
    """PEFT saves no custom-module registration; load_adapter restores it from the saved config."""
    model = adapted(case)
    base_model().save_pretrained(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    logits, _ = logits_in_a_fresh_process(tmp_path / "base", tmp_path / "adapter", IDS, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(IDS).logits, rtol=0, atol=1e-6)


def test_load_adapter_restores_the_method_in_process(tmp_path):
    model = adapted("dvlora")
    model.save_pretrained(tmp_path)
    again = load_adapter(base_model(), tmp_path).eval()
    assert {type(m).__name__ for m in lora_layers(again)} == {"DVLoraLinear"}
    with torch.no_grad():
        torch.testing.assert_close(again(IDS).logits, model(IDS).logits, rtol=0, atol=1e-6)


def test_load_adapter_refuses_a_directory_without_adapter_config(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="has no adapter_config.json"):
        load_adapter(base_model(), tmp_path)


def test_training_updates_every_adapter_tensor_and_nothing_else():
    model = wrap("dvlora", base_model(), DVLoraSettings(r=4, alpha=8, dropout=0.0, gate="scalar"))
    trainable = {n.split(".")[-3] if n.endswith(".weight") else n.split(".")[-2]
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A", "lora_B", "lora_dv_b", "lora_dv_d", "lora_gate"}
    model(IDS, labels=IDS).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    hydra = wrap("hydra", base_model(), HydraSettings(r=4, alpha=8, dropout=0.0, sequential_r=2))
    assert {n.split(".")[-3] for n, p in hydra.named_parameters() if p.requires_grad} == \
        {"lora_A", "lora_B", "lora_seq_A", "lora_seq_B"}


@pytest.mark.parametrize("bad", [dict(sequential_r=0), dict(sequential_alpha=-1), dict(init="ones")])
def test_bad_hydra_settings_name_the_value(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        HydraSettings(**bad)


@pytest.mark.parametrize("bad", [dict(gate="sometimes"), dict(vector_init=0), dict(init="ones")])
def test_bad_dvlora_settings_name_the_value(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        DVLoraSettings(**bad)


def test_the_methods_are_registered_by_name():
    assert get_adapter("hydra").config_cls is HydraSettings
    assert get_adapter("dvlora").config_cls is DVLoraSettings
    assert get_adapter("blocklora").config_cls is BlockLoraSettings
