"""Block-LoRA's own checks (rearqa.reader.adapters.blocklora): its forward is LoRA with every
down-projection block shared, the parameter count, the settings it refuses, and what sharing
implies for training. Merge, unmerge, export and reload in a fresh process are tested with the
other methods in test_adapter_methods.py."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.adapters import wrap
from rearqa.reader.adapters.blocklora.config import BlockLoraSettings
from rearqa.reader.adapters.blocklora.layer import BlockLoraLinear
from rearqa.testing import moved_off_init, tiny_llama

IDS = torch.tensor([[1, 5, 7, 9, 11, 13, 2, 40]])


def base_model():
    return tiny_llama(64, tied=False, hidden_size=16, seed=3)


def adapted(r=4, blocks=2, alpha=8, share="rank"):
    """The tiny Llama with Block-LoRA, every adapter tensor moved off its init."""
    settings = BlockLoraSettings(r=r, alpha=alpha, dropout=0.0, blocks=blocks, init="random", share=share)
    return moved_off_init(wrap("blocklora", base_model(), settings).eval())


def layers(model):
    return [m for m in model.modules() if isinstance(m, BlockLoraLinear)]


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_the_forward_is_lora_with_every_down_projection_block_shared(blocks):
    """h = W0 x + s B A x with A = [A_s; ...; A_s] (n row blocks, all A_s): the partitioned LoRA of
    the definition, written out without the layer's own sum of B blocks."""
    model = adapted(r=4, blocks=blocks)
    torch.manual_seed(0)
    for layer in layers(model):
        a_s, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert a_s.shape == (4 // blocks, layer.in_features) and b.shape == (layer.out_features, 4)
        x = torch.randn(3, 5, layer.in_features)
        a_full = a_s.repeat(blocks, 1)  # (r, d_in): row block i is A_i = A_s
        expected = layer.base_layer(x) + layer.scaling["default"] * (x @ a_full.T @ b.T)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)
            assert (layer(x) - layer.base_layer(x)).abs().max() > 1e-3
            assert torch.linalg.matrix_rank(layer.get_delta_weight("default"), rtol=1e-4) == 4 // blocks


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_share_input_is_lora_with_every_input_column_block_of_a_shared(blocks):
    """share: input. h = W0 x + s B A x with A = [A_s, ..., A_s] (n column blocks, all A_s), written
    out without the layer's own sum of x's chunks; the update keeps rank r, not r / n."""
    model = adapted(r=4, blocks=blocks, share="input")
    torch.manual_seed(0)
    for layer in layers(model):
        a_s, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        assert a_s.shape == (4, layer.in_features // blocks) and b.shape == (layer.out_features, 4)
        x = torch.randn(3, 5, layer.in_features)
        a_full = a_s.repeat(1, blocks)  # (r, d_in): column block j is A_j = A_s
        expected = layer.base_layer(x) + layer.scaling["default"] * (x @ a_full.T @ b.T)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)
            assert torch.linalg.matrix_rank(layer.get_delta_weight("default"), rtol=1e-4) == 4  # fp32 noise aside


def test_share_input_trains_fewer_parameters_in_a():
    """Per layer r d_in / n + r d_out."""
    r, blocks = 4, 2
    model = wrap("blocklora", base_model(), BlockLoraSettings(r=r, alpha=8, blocks=blocks, share="input"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(r * layer.in_features // blocks + r * layer.out_features for layer in layers(model))


def test_share_input_refuses_a_block_count_that_does_not_divide_the_width():
    # the tiny Llama's widths are 16 (hidden) and its MLP's; 3 divides neither of 16
    with pytest.raises(ValueError, match=r"blocks=3 does not divide this layer's input width d_in=16 .*use blocks in \[1, 2, 4, 8, 16\]"):
        wrap("blocklora", base_model(), BlockLoraSettings(r=6, alpha=8, blocks=3, share="input"))


def test_one_block_is_plain_lora():
    """blocks: 1 shares nothing: its saved tensors load into PEFT's plain LoRA and compute the same."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    block = adapted(r=4, blocks=1)
    plain = get_peft_model(base_model(), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                    target_modules="all-linear")).eval()
    result = set_peft_model_state_dict(plain, get_peft_model_state_dict(block))
    assert not result.unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS).logits, block(IDS).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_trainable_parameters_are_r_over_n_d_in_plus_r_d_out_per_layer(blocks):
    """Per layer (r / n) d_in + r d_out, against plain LoRA's r (d_in + d_out) at the same r."""
    r = 4
    model = wrap("blocklora", base_model(), BlockLoraSettings(r=r, alpha=8, blocks=blocks))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dims = [(layer.in_features, layer.out_features) for layer in layers(model)]
    assert trainable == sum(r // blocks * d_in + r * d_out for d_in, d_out in dims)
    plain_lora = sum(r * (d_in + d_out) for d_in, d_out in dims)
    assert plain_lora - trainable == sum((r - r // blocks) * d_in for d_in, _ in dims)


def test_every_up_projection_block_gets_the_same_gradient():
    """A property of sharing A that docs/adapters.md states: dL/dB_i = s dL/dh (A_s x)^T for every
    i, so the blocks move together and their sum moves n times as far as one block (SGD, Adam)."""
    model = wrap("blocklora", base_model(), BlockLoraSettings(r=4, alpha=8, dropout=0.0, blocks=2))
    model.train()
    model(IDS, labels=IDS).loss.backward()
    for layer in layers(model):
        assert layer.lora_A["default"].weight.grad is not None
        grad = layer.lora_B["default"].weight.grad  # (d_out, r)
        first, second = grad[:, :2], grad[:, 2:]
        assert first.abs().max() > 0
        torch.testing.assert_close(first, second, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Unexpected keyword arguments")  # PEFT on our config fields
def test_a_saved_adapter_does_not_load_silently_as_plain_lora(tmp_path):
    """lora_A has r / n rows: PEFT's plain loader (no rearqa registration) fails on the shape
    instead of building a wrong model; load_adapter is the way (test_adapter_methods.py)."""
    from peft import PeftModel

    adapted(r=4, blocks=2).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(base_model(), tmp_path)


@pytest.mark.parametrize("bad, match", [
    (dict(r=4, blocks=3), r"blocks=3 does not divide r=4 .* use blocks in \[1, 2, 4\]"),
    (dict(blocks=0), "blocks=0: must be a positive integer"),
    (dict(blocks=2.0), "blocks=2.0: must be a positive integer"),
    (dict(init="ones"), "init='ones'"),
    (dict(share="cols"), r"share='cols': must be one of \['rank', 'input'\]"),
])
def test_bad_settings_name_the_value_and_the_fix(bad, match):
    with pytest.raises(ConfigError, match=match):
        BlockLoraSettings(**bad)
