"""TPLA: the latent rotation folds exactly, one shard is full MLA, two real gloo processes
compute what the one-process simulation computes, and two shards are an approximation."""
from __future__ import annotations

import copy

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.tpla import decode
from rearqa.reader.backbone.tpla.config import TPLAConfig
from rearqa.reader.backbone.tpla.dist import run_distributed
from rearqa.reader.backbone.tpla.rotation import (fold_rotation, hadamard, latent_moments, pca_rotation,
                                                  rotate_for_tpla)
from rearqa.reader.backbone.tpla.sharded import install_tpla
from rearqa.reader.backbone.transmla.modeling import install_mla
from rearqa.testing import tiny_deepseek


def mla_model(rank=16, rope=8, nope=16, v=16, heads=3, norm=True, seed=0):
    """A random 2-layer MLA DeepseekV3ForCausalLM (weights std 0.3), with a non-trivial latent norm."""
    model = install_mla(tiny_deepseek(rank, rope, nope, v, heads, norm, seed=seed))
    if norm:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.kv_a_layernorm.weight.uniform_(0.5, 1.5)
    return model


def tokens(batch=2, length=24, seed=1):
    torch.manual_seed(seed)
    return torch.randint(3, 50, (batch, length))


def orthogonal(n, seed=2):
    torch.manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    return q


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_hadamard_is_orthogonal(n):
    h = hadamard(n)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=torch.float64))
    assert torch.allclose(h.abs(), torch.full_like(h, n ** -0.5))
    with pytest.raises(ValueError, match="power of two"):
        hadamard(12)


def test_pca_rotation_is_orthogonal_and_balances_the_shards():
    torch.manual_seed(0)
    x = torch.randn(500, 8, dtype=torch.float64) * torch.tensor([8., 7, 6, 5, 4, 3, 2, 1], dtype=torch.float64)
    moment = x.T @ x / 500
    rot = pca_rotation(moment, shards=2)
    torch.testing.assert_close(rot @ rot.T, torch.eye(8, dtype=torch.float64))
    energy = (rot @ moment @ rot.T).diagonal()
    assert energy[:4].sum() / energy[4:].sum() < 1.5  # round robin: 8,6,4,2 against 7,5,3,1 in energy


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("rotation", ["random", "hadamard", "pca"])
def test_a_folded_rotation_is_exact_on_the_full_model(one_thread, norm, rotation):
    model = mla_model(norm=norm)
    rotated = copy.deepcopy(model)
    if rotation == "random":
        fold_rotation(rotated, orthogonal(16))
    else:
        rotate_for_tpla(rotated, TPLAConfig(shards=2, rotation=rotation), calib=tokens(4, 16, seed=5))
    ids = tokens()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        torch.testing.assert_close(rotated(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
        for m in (model, rotated):  # the absorbed decode path too
            for layer in m.model.layers:
                layer.self_attn.absorb_max_query = 10**9
        torch.testing.assert_close(rotated(input_ids=ids).logits, model(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)


def test_pca_rotation_decorrelates_the_cached_latent(one_thread):
    model = mla_model()
    calib = tokens(4, 16, seed=5)
    rotate_for_tpla(model, TPLAConfig(shards=2, rotation="pca"), calib=calib)
    moment = latent_moments(model, calib)[0]
    off = moment - torch.diag(moment.diagonal())
    assert off.abs().max() < 1e-6 * moment.diagonal().max()


@pytest.mark.parametrize("norm", [True, False])
def test_one_shard_is_full_mla(one_thread, norm):
    model = mla_model(norm=norm)
    ids = tokens()
    full = decode.teacher_forced(model, ids, prefill=8)["logits"]
    one = decode.teacher_forced(install_tpla(copy.deepcopy(model), shards=1), ids, prefill=8)["logits"]
    torch.testing.assert_close(one, full, rtol=1e-5, atol=1e-5)


def test_prefill_is_full_mla_and_decode_is_an_approximation(one_thread):
    model = mla_model()
    ids = tokens(length=40)
    tpla = install_tpla(copy.deepcopy(model), shards=2)
    with torch.no_grad():  # 40 tokens > ABSORB_MAX_QUERY: the expanded, unsharded path
        torch.testing.assert_close(tpla(input_ids=ids).logits, model(input_ids=ids).logits)
    full = decode.teacher_forced(model, ids, prefill=20)["logits"]
    two = decode.teacher_forced(tpla, ids, prefill=20)["logits"]
    error = (two - full).abs()
    print(f"\nTPLA g=2 on a random model: max |logit diff| {error.max():.4f}, mean {error.mean():.4f}")
    assert error.max() > 1e-3  # separate softmaxes: not the same function


def test_two_gloo_processes_equal_the_one_process_simulation(one_thread):
    model = mla_model()
    rotate_for_tpla(model, TPLAConfig(shards=2, rotation="hadamard"))
    ids = tokens(length=30)
    simulated = decode.teacher_forced(install_tpla(copy.deepcopy(model), shards=2), ids, prefill=20)
    distributed = run_distributed(model, "teacher_forced", shards=2, ids=ids, prefill=20)
    assert distributed["logits"].shape == (2, 9, 50)
    torch.testing.assert_close(distributed["logits"], simulated["logits"], rtol=1e-4, atol=1e-4)
    # greedy, with the no-RoPE logit scale carried to the ranks too
    greedy_sim = decode.greedy(install_tpla(copy.deepcopy(model), shards=2, nope_scale=2.0), ids[:, :20], steps=6)
    greedy_dist = run_distributed(model, "greedy", shards=2, nope_scale=2.0, ids=ids[:, :20], steps=6)
    torch.testing.assert_close(greedy_dist["logits"], greedy_sim["logits"], rtol=1e-4, atol=1e-4)
    assert torch.equal(greedy_dist["tokens"], greedy_sim["tokens"])


def test_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="rotation"):
        TPLAConfig(rotation="random")
    with pytest.raises(ConfigError, match="power of two"):
        TPLAConfig(shards=2, rotation="hadamard").check_model(type("C", (), {"kv_lora_rank": 96})())
    with pytest.raises(ConfigError, match="splits evenly"):
        TPLAConfig(shards=5, rotation="none").check_model(type("C", (), {"kv_lora_rank": 96})())
