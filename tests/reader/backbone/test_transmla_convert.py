"""TransMLA conversion: each exact step keeps the attention logits, the joint PCA is exact at the
cap rank, and the real SmolLM2 reader converts to a DeepseekV3 model that still reads text."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rearqa.reader.backbone.transmla.calibration import (CalibrationRecord, calibration_batches,
                                                         perplexity, read_passages, split_passages)
from rearqa.reader.backbone.transmla.config import ModelShape, TransMLAConfig
from rearqa.reader.backbone.transmla.convert import (balance_kv, collect_kv_moments, convert,
                                                     joint_pca, reference_logits, replicate_kv,
                                                     rorope)
from rearqa.testing import randomize_matrices

THETA = 10000.0


def small_llama(dtype=torch.float64, kv_heads=2, seed=0):
    """4 query heads, 2 KV heads of 16, 2 layers, random weights of std 0.3."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                         max_position_embeddings=64, rope_parameters={"rope_type": "default",
                                                                      "rope_theta": THETA},
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return randomize_matrices(LlamaForCausalLM(config).eval()).to(dtype)


def original_logits(model, layer: int, x, positions):
    """(H, T, T) unscaled logits of the Llama layer, through transformers' own RoPE."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg, attn = model.config, model.model.layers[layer].self_attn
    d, group = cfg.head_dim, cfg.num_attention_heads // cfg.num_key_value_heads
    q = attn.q_proj(x).view(-1, cfg.num_attention_heads, d).transpose(0, 1)[None]  # (1, H, T, d)
    k = attn.k_proj(x).view(-1, cfg.num_key_value_heads, d).transpose(0, 1)[None]  # (1, K, T, d)
    cos, sin = LlamaRotaryEmbedding(cfg)(x, positions[None])
    q, k = apply_rotary_pos_emb(q, k, cos.to(x.dtype), sin.to(x.dtype))
    return (q @ k.repeat_interleave(group, dim=1).transpose(-1, -2))[0]


@pytest.fixture
def setup(one_thread):
    model = small_llama()
    calib = torch.randint(3, 64, (4, 24))
    moments = collect_kv_moments(model, calib)
    x = torch.randn(10, 32, dtype=torch.float64)
    return model, moments, x, torch.arange(10) + 3


def latent(model, moments, layer=0):
    attn, shape = model.model.layers[layer].self_attn, ModelShape.of(model.config)
    return replicate_kv(attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight,
                        moments[layer], shape), shape


def test_replication_keeps_the_logits(setup):
    model, moments, x, pos = setup
    w, _ = latent(model, moments)
    expected = original_logits(model, 0, x, pos)
    got = reference_logits(w, x, pos, THETA, 16)
    # transformers computes RoPE's cos/sin in fp32: agreement to fp32 round-off
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)


def test_rorope_rotation_commutes_with_rope_only_with_one_frequency_per_group(setup):
    model, moments, x, pos = setup
    w, shape = latent(model, moments)
    expected = reference_logits(w, x, pos, THETA, 16)
    exact, energy = rorope(w, shape, rope_dim=16, freqfold=1, damping=0.01)
    torch.testing.assert_close(reference_logits(exact, x, pos, THETA, 16), expected, rtol=1e-9, atol=1e-9)
    assert 0 < energy <= 1
    pooled, _ = rorope(w, shape, rope_dim=8, freqfold=2, damping=0.01)
    assert not torch.allclose(reference_logits(pooled, x, pos, THETA, 16), expected, atol=1e-3)


def test_balancing_is_exact(setup):
    model, moments, x, pos = setup
    w, shape = latent(model, moments)
    w, _ = rorope(w, shape, rope_dim=16, freqfold=1, damping=0.01)
    balanced, ratio = balance_kv(w, shape)
    assert ratio > 0 and ratio != 1
    torch.testing.assert_close(reference_logits(balanced, x, pos, THETA, 16),
                               reference_logits(w, x, pos, THETA, 16), rtol=1e-9, atol=1e-9)
    # the balanced K_nope and V have equal mean per-dim norms
    norms = balanced.cov.diagonal().sqrt()
    torch.testing.assert_close(norms[16:32].mean(), norms[32:].mean())


def _deepseek_logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("freqfold,rope_dim", [(1, 16), (2, 8), (4, 4)])
def test_mla_at_the_cap_rank_reproduces_the_partial_rope_model(one_thread, freqfold, rope_dim):
    model = small_llama()
    calib = torch.randint(3, 64, (4, 24))
    cap = ModelShape.of(model.config).rank_cap(rope_dim)
    cfg = TransMLAConfig(kv_lora_rank=cap, rope_dim=rope_dim, freqfold=freqfold)
    mla, report = convert(model, calib, cfg)
    partial, _ = convert(model, calib, cfg, compress=False)
    assert isinstance(mla.model.layers[0].self_attn.kv_a_layernorm, nn.Identity)
    assert mla.config.qk_nope_head_dim == 16 and mla.config.qk_rope_head_dim == rope_dim
    assert not mla.config.tie_word_embeddings
    ids = torch.randint(3, 64, (2, 20))
    expected, got = _deepseek_logits(partial, ids), _deepseek_logits(mla, ids)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert all(abs(row["pca_energy"] - 1) < 1e-12 for row in report["layers"])
    assert report["calibration"]["n_samples"] == 4


def test_partial_rope_with_full_rope_and_freqfold_1_is_the_original_model(one_thread):
    """With one KV head and rope_dim == head_dim no key dim drops RoPE, so the partial-RoPE
    DeepSeek model is the Llama: a parity test of the whole layout (RoPE order, scale, MLP)."""
    model = small_llama(kv_heads=1)
    cfg = TransMLAConfig(kv_lora_rank=1, rope_dim=16, freqfold=1)
    partial, _ = convert(model, torch.randint(3, 64, (4, 24)), cfg, compress=False)
    ids = torch.randint(3, 64, (2, 20))
    torch.testing.assert_close(_deepseek_logits(partial, ids), model(input_ids=ids).logits,
                               rtol=1e-8, atol=1e-8)


def test_a_rank_below_the_cap_loses_information_and_energy_grows_with_rank(one_thread):
    model = small_llama()
    calib = torch.randint(3, 64, (4, 24))
    cap = ModelShape.of(model.config).rank_cap(8)
    ids = torch.randint(3, 64, (2, 20))
    partial, _ = convert(model, calib, TransMLAConfig(kv_lora_rank=cap, rope_dim=8, freqfold=2),
                         compress=False)
    low, _ = convert(model, calib, TransMLAConfig(kv_lora_rank=cap // 2, rope_dim=8, freqfold=2))
    got = _deepseek_logits(low, ids)
    assert torch.isfinite(got).all()
    assert not torch.allclose(got, _deepseek_logits(partial, ids), atol=1e-4)
    w, shape = latent(model, collect_kv_moments(model, calib))
    w, _ = balance_kv(rorope(w, shape, 8, 2, 0.01)[0], shape)
    energies = [joint_pca(w, shape, r, 0.01)[1] for r in range(1, cap + 1)]
    assert all(a <= b + 1e-12 for a, b in zip(energies, energies[1:]))
    assert abs(energies[-1] - 1) < 1e-12


def test_latent_norm_starts_at_the_latent_rms(one_thread):
    model = small_llama()
    cfg = TransMLAConfig(kv_lora_rank=20, rope_dim=8, freqfold=2, latent_norm=True)
    mla, report = convert(model, torch.randint(3, 64, (4, 24)), cfg)
    weight = mla.model.layers[1].self_attn.kv_a_layernorm.weight
    assert torch.allclose(weight, torch.full_like(weight, report["layers"][1]["latent_rms"]))
    assert torch.isfinite(mla(input_ids=torch.randint(3, 64, (1, 12))).logits).all()


def test_calibration_samples_are_exact_length_and_the_held_out_split_is_seeded(prepared_home):
    from transformers import AutoTokenizer

    from rearqa import assets

    passages = read_passages(assets.corpus_file(prepared_home))
    calib_p, held_p = split_passages(passages, seed=0)
    assert len(calib_p) + len(held_p) == len(passages)
    assert len(held_p) == round(0.1 * len(passages))
    assert split_passages(passages, seed=0) == (calib_p, held_p)
    tok = AutoTokenizer.from_pretrained(assets.reader_model_dir(prepared_home))
    batch = calibration_batches(tok, calib_p, 3, 50, seed=1)
    assert batch.shape == (3, 50) and batch.dtype == torch.long
    assert torch.equal(batch, calibration_batches(tok, calib_p, 3, 50, seed=1))
    record = CalibrationRecord.of(batch, "corpus", 1)
    assert record.sha256 != CalibrationRecord.of(calibration_batches(tok, calib_p, 3, 50, 2), "c", 2).sha256


@pytest.mark.slow
def test_smollm2_converts_to_a_reader_that_still_reads(reader_dir, prepared_home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa import assets

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tok = AutoTokenizer.from_pretrained(reader_dir)
        model = AutoModelForCausalLM.from_pretrained(reader_dir, dtype=torch.float32).eval()
        calib_p, held_p = split_passages(read_passages(assets.corpus_file(prepared_home)), seed=0)
        calib = calibration_batches(tok, calib_p, 8, 128, seed=0)
        held = calibration_batches(tok, held_p, 4, 128, seed=0)
        cfg = TransMLAConfig(kv_lora_rank=320, rope_dim=64)
        partial, _ = convert(model, calib, cfg, compress=False)
        mla, report = convert(model, calib, cfg)
        ppl_partial, ppl_mla = perplexity(partial, held), perplexity(mla, held)
    finally:
        torch.set_num_threads(before)
    assert report["freqfold"] == 2 and len(report["layers"]) == 30  # the default at rope 64
    assert ppl_mla < 1e4 and abs(ppl_mla - ppl_partial) / ppl_partial < 0.02


def deepseek_layer_logits(model, layer: int, x, positions):
    """(H, T, T) logits of a DeepseekV3 layer, softmax scale applied, through transformers' own
    interleaved RoPE: q_nope . k_nope + q_rope . k_rope."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import apply_rotary_pos_emb_interleave

    cfg, attn = model.config, model.model.layers[layer].self_attn
    nope, rope, heads = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.num_attention_heads
    q = attn.q_proj(x).view(-1, heads, nope + rope).transpose(0, 1)  # (H, T, nope + rope)
    c, k_rope = attn.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, rope], dim=-1)  # (T, r), (T, rope)
    kv = attn.kv_b_proj(attn.kv_a_layernorm(c)).view(-1, heads, 2 * nope).transpose(0, 1)
    k_nope = kv[..., :nope]  # (H, T, nope)
    cos, sin = model.model.rotary_emb(x, positions[None])
    q_rope, k_rope = apply_rotary_pos_emb_interleave(q[None, ..., nope:], k_rope[None, None],
                                                     cos.to(x.dtype), sin.to(x.dtype))
    logits = q[..., :nope] @ k_nope.transpose(-1, -2) + (q_rope @ k_rope.transpose(-1, -2))[0]
    return logits * attn.scaling


@pytest.mark.parametrize("freqfold,rope_dim", [(1, 16), (2, 8), (4, 4), (4, 8)])
def test_the_deepseek_layout_is_the_partial_rope_latent_view(one_thread, freqfold, rope_dim):
    """The interleaved RoPE rows, the [::collapse] frequencies and the folded softmax scale: the
    DeepSeek layer's logits equal the latent view with RoPE on the leading rope_dim dims."""
    model = small_llama()
    calib = torch.randint(3, 64, (4, 24))
    partial, _ = convert(model, calib, TransMLAConfig(kv_lora_rank=1, rope_dim=rope_dim,
                                                      freqfold=freqfold), compress=False)
    w, shape = latent(model, collect_kv_moments(model, calib), layer=1)
    w, _ = balance_kv(rorope(w, shape, rope_dim, freqfold, 0.01)[0], shape)
    x, pos = torch.randn(10, 32, dtype=torch.float64), torch.arange(10) + 5
    expected = reference_logits(w, x, pos, THETA, 16, rope_all=False) / 16 ** 0.5
    # DeepSeek computes its cos/sin in fp32
    torch.testing.assert_close(deepseek_layer_logits(partial, 1, x, pos).detach(), expected,
                               rtol=1e-5, atol=1e-5)


def test_pca_directions_have_one_sign_whatever_the_eigensolver_returns():
    """Eigenvectors are defined up to sign and LAPACK's choice varies by machine and threads;
    _pca fixes it (column_signs), so a conversion made on the GPU machine is the same weights
    as one rebuilt here (a heal LoRA trained over one applies to the other)."""
    from rearqa.reader.backbone.transmla.convert import _pca, column_signs

    torch.manual_seed(0)
    x = torch.randn(200, 12, dtype=torch.float64)
    cov = x.T @ x / 200
    values, vectors = _pca(cov, 0.0)
    flipped = vectors * torch.tensor([1.0, -1.0] * 6, dtype=torch.float64)
    assert torch.equal(flipped * column_signs(flipped), vectors)
    peaks = vectors.gather(0, vectors.abs().argmax(0, keepdim=True))
    assert (peaks > 0).all()
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, cov)
