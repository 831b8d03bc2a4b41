"""MASA as an adapter: atoms shared across layers inside PEFT (one tensor per projection type,
trained, saved and reloaded once), merge / unmerge / delta exact from a non-identity state, the
export to plain LoRA by truncated SVD with its error recorded, and the refusals."""
from __future__ import annotations

import json

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import get_adapter, load_adapter, wrap
from rearqa.reader.adapters.export import export_lora, svd_factors
from rearqa.reader.adapters.masa.config import MasaSettings
from rearqa.reader.adapters.masa.layer import MasaLinear
from rearqa.testing import logits_in_a_fresh_process, moved_off_init, tiny_llama

IDS = torch.tensor([[1, 5, 7, 9, 11, 13, 2, 40]])
LAYERS = 3
SETTINGS = MasaSettings(r=4, alpha=8, dropout=0.0, atoms=2, init="random")


def base_model():
    return tiny_llama(64, tied=False, hidden_size=16, seed=3, layers=LAYERS)


def adapted(settings: MasaSettings = SETTINGS):
    """The tiny Llama with MASA, every atom and coefficient moved off its init."""
    return moved_off_init(wrap("masa", base_model(), settings).eval())


def masa_layers(model):
    return [m for m in model.modules() if isinstance(m, MasaLinear)]


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


def test_each_projection_type_shares_one_atom_tensor_across_the_layers():
    model = adapted()
    layers = masa_layers(model)
    assert len(layers) == 4 * LAYERS  # q, k, v, o of every layer; the MLP is not a default target
    atoms = {name.split(".")[-3]: p for name, p in model.named_parameters() if "lora_masa_atoms" in name}
    assert sorted(atoms) == ["k_proj", "o_proj", "q_proj", "v_proj"]  # one registered tensor each
    assert atoms["q_proj"].shape == (2, 16, 16) and atoms["k_proj"].shape == (2, 8, 16)
    for layer in layers:
        leaf = layer._masa_target.rsplit(".", 1)[-1]
        assert layer.atoms("default") is atoms[leaf]
        assert "default" not in layer.lora_A and "default" not in layer.lora_B  # nothing dead
    trainable = {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"lora_masa_coef", "lora_masa_atoms"}


def test_one_backward_reaches_every_coefficient_and_the_shared_atoms():
    model = adapted()
    model.train()
    model(IDS, labels=IDS).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


def test_the_atoms_gradient_is_the_coefficient_weighted_sum_over_layers():
    """dL/dD_s = scale * sum_l c_{l,s} dL/dW_l, with dL/dW_l read off a merged copy."""
    model = adapted()
    model(IDS, labels=IDS).loss.backward()
    q_atoms = next(p for n, p in model.named_parameters() if "q_proj.lora_masa_atoms" in n)
    merged = adapted().merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)
    merged(IDS, labels=IDS).loss.backward()
    layers = [m for m in masa_layers(model) if m._masa_target.endswith("q_proj")]
    expected = sum(layer.scaling["default"] * layer.lora_masa_coef["default"].detach()[:, None, None]
                   * merged.model.layers[i].self_attn.q_proj.weight.grad
                   for i, layer in enumerate(layers))
    torch.testing.assert_close(q_atoms.grad, expected, rtol=1e-4, atol=1e-6)


def test_merge_then_unmerge_restores_the_base_weight():
    model = adapted()
    layers = masa_layers(model)
    with torch.no_grad():
        before = [layer.base_layer.weight.clone() for layer in layers]
        deltas = [layer.get_delta_weight("default") for layer in layers]
        model.merge_adapter()
        for layer, w0, delta in zip(layers, before, deltas):
            assert delta.abs().max() > 1e-3
            torch.testing.assert_close(layer.base_layer.weight - w0, delta, rtol=0, atol=1e-6)
        model.unmerge_adapter()
        for layer, w0 in zip(layers, before):
            torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)


def test_the_delta_is_the_coefficient_mix_of_the_shared_atoms():
    model = adapted()
    atoms = next(p for n, p in model.named_parameters() if "v_proj.lora_masa_atoms" in n)
    for layer in (m for m in masa_layers(model) if m._masa_target.endswith("v_proj")):
        c = layer.lora_masa_coef["default"]
        expected = layer.scaling["default"] * (c[0] * atoms[0] + c[1] * atoms[1])
        torch.testing.assert_close(layer.get_delta_weight("default"), expected.detach())


def test_the_merged_model_computes_what_the_adapter_model_does():
    model = adapted()
    with torch.no_grad():
        expected = model(IDS).logits
        assert (expected - base_model()(IDS).logits).abs().max() > 1e-2
        with model.disable_adapter():
            torch.testing.assert_close(model(IDS).logits, base_model()(IDS).logits)
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(IDS).logits, expected, rtol=0, atol=1e-5)


def test_zero_init_starts_at_the_base_model():
    model = wrap("masa", base_model(), MasaSettings(r=4, alpha=8, dropout=0.0, atoms=3))
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, base_model()(IDS).logits)


def test_the_export_is_a_truncated_svd_with_its_error_recorded(tmp_path):
    from peft import PeftModel

    model = adapted()
    out = export_lora(model, tmp_path / "plain")
    record = json.loads((out / "rearqa_export.json").read_text())
    assert record["exact"] is False and record["rank"] == 4 and record["from_method"] == "masa"
    errors = record["approximation"]["relative_error"]
    assert len(errors) == 4 * LAYERS
    # k/v are 8 x 16, so rank 4 of 8 drops something; q/o are 16 x 16
    assert all(0 < e < 1 for e in errors.values())
    layer = masa_layers(model)[0]
    delta = layer.get_delta_weight("default").double()
    sv = torch.linalg.svdvals(delta)
    name = next(n for n in errors if n.endswith("layers.0.self_attn.q_proj"))
    assert errors[name] == pytest.approx((sv[4:].square().sum() / sv.square().sum()).sqrt().item())
    plain = PeftModel.from_pretrained(base_model(), out)
    with torch.no_grad():
        for (n, m) in plain.named_modules():
            if n.endswith("layers.0.self_attn.q_proj"):
                approx = m.get_delta_weight("default").double()
        assert (torch.linalg.matrix_norm(approx - delta) / torch.linalg.matrix_norm(delta)).item() \
            == pytest.approx(errors[name], rel=1e-5)
    full = export_lora(model, tmp_path / "full", rank=16)  # 16 >= every layer's rank: exact
    assert json.loads((full / "rearqa_export.json").read_text())["approximation"]["relative_error_max"] < 1e-6
    with torch.no_grad():
        expected = model.merge_and_unload()(IDS).logits
        exported = PeftModel.from_pretrained(base_model(), full).merge_and_unload()(IDS).logits
        torch.testing.assert_close(exported, expected, rtol=0, atol=1e-5)


def test_svd_factors_pad_a_rank_above_the_matrix_rank():
    delta = torch.randn(3, 5, dtype=torch.float64)
    a, b, error = svd_factors(delta, 4)
    assert a.shape == (4, 5) and b.shape == (3, 4) and error < 1e-12
    torch.testing.assert_close(b @ a, delta)


def test_an_exact_method_refuses_an_export_rank(tmp_path):
    from rearqa.reader.adapters.hydra.config import HydraSettings

    model = wrap("hydra", base_model(), HydraSettings(r=2, alpha=4, sequential_r=2))
    with pytest.raises(ValueError, match="exports exactly"):
        export_lora(model, tmp_path / "x", rank=8)


# In the fresh process: every layer reads the atoms of its type's one owner.
SHARED_ATOMS = """
layers = [m for m in model.modules() if type(m).__name__ == "MasaLinear"]
assert all(m.atoms("default") is next(o for o in layers if o._masa_target.rsplit(".", 1)[-1] ==
           m._masa_target.rsplit(".", 1)[-1] and o.owns_atoms("default")).atoms("default") for m in layers)
"""


def test_a_saved_adapter_stores_each_dictionary_once_and_reloads_in_a_fresh_process(tmp_path):
    from safetensors.torch import load_file

    model = adapted()
    base_model().save_pretrained(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert sum("lora_masa_atoms" in k for k in saved) == 4  # one per projection type, not per layer
    assert sum("lora_masa_coef" in k for k in saved) == 4 * LAYERS
    assert not any(".lora_A." in k or ".lora_B." in k for k in saved)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["rearqa_method"] == "masa" and config["masa_atoms"] == 2
    logits, stderr = logits_in_a_fresh_process(tmp_path / "base", tmp_path / "adapter", IDS, tmp_path,
                                               check=SHARED_ATOMS)
    assert "missing" not in stderr.lower() and "unexpected" not in stderr.lower(), stderr
    with torch.no_grad():
        torch.testing.assert_close(logits, model(IDS).logits, rtol=0, atol=1e-6)


def test_two_models_wrapped_with_masa_share_nothing():
    first, second = adapted(), adapted()
    a = next(p for n, p in first.named_parameters() if "lora_masa_atoms" in n)
    b = next(p for n, p in second.named_parameters() if "lora_masa_atoms" in n)
    assert a is not b
    for layer in masa_layers(second):
        assert all(layer.atoms("default") is not p for p in first.parameters())


def test_a_model_in_bf16_trains_the_atoms_in_the_adapter_dtype():
    model = wrap("masa", base_model().to(torch.bfloat16), SETTINGS)
    out = model(IDS, labels=IDS)
    out.loss.backward()
    assert torch.isfinite(out.logits.float()).all()


@pytest.mark.parametrize("bad", [dict(atoms=0), dict(atoms=1.5), dict(atoms=True), dict(init="ones")])
def test_bad_masa_settings_name_the_value(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        MasaSettings(**bad)


def test_masa_is_registered_by_name_and_defaults_to_the_attention_projections():
    method = get_adapter("masa")
    assert method.config_cls is MasaSettings and method.exports_to_lora is False
    assert MasaSettings().target == ["q_proj", "k_proj", "v_proj", "o_proj"]
    model = wrap("masa", base_model(), MasaSettings(target="all-linear", atoms=2))
    assert len(masa_layers(model)) == 7 * LAYERS
    assert sum("lora_masa_atoms" in n for n, _ in model.named_parameters()) == 7
