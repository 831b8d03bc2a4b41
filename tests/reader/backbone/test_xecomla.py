"""X-EcoMLA conversion: the layout is exact where nothing is dropped (full rank, full rope, one KV
head), the SVD latent reconstructs [K_nope; V] at the cap, the energy rule picks padded ranks
exactly, bad settings are refused, and a converted reader survives export and reload."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import get_transform, read_manifest
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.reader.backbone.transmla.config import ModelShape
from rearqa.reader.backbone.xecomla.config import XEcoMLAConfig, energy_rank
from rearqa.reader.backbone.xecomla.convert import (convert, nope_rows, pad_latent, repeated_kv,
                                                    repeated_kv_svd, rope_rows)
from rearqa.reader.backbone.xecomla.transform import REPORT_FILE
from rearqa.testing import randomize_matrices


def small_llama(kv_heads=2, seed=0):
    """4 query heads, `kv_heads` KV heads of 16, hidden 32, 2 layers, random weights, float64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                         max_position_embeddings=64, rope_parameters={"rope_type": "default",
                                                                      "rope_theta": 10000.0},
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return randomize_matrices(LlamaForCausalLM(config).eval()).to(torch.float64)


def logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def low_rank_first_layer(model, rank: int = 4):
    """`model` with layer 0's k_proj and v_proj of rank `rank`: its energy rank is small."""
    attn = model.model.layers[0].self_attn
    basis = torch.linalg.qr(torch.randn(attn.k_proj.weight.shape[1], rank, dtype=torch.float64))[0]
    with torch.no_grad():
        for proj in (attn.k_proj, attn.v_proj):
            proj.weight.copy_(proj.weight @ basis @ basis.T)
    return model


def test_with_one_kv_head_full_rope_and_full_rank_it_is_the_original_model(one_thread):
    """Nothing is dropped: the mean rotary key is the one key, every dim keeps RoPE, the SVD is
    complete: a parity test of the whole layout (interleaved rope rows, scale, MLP, norms)."""
    model = small_llama(kv_heads=1)
    mla = get_transform("xecomla").apply(model, None, XEcoMLAConfig(kv_lora_rank=32, rope_dim=16))
    ids = torch.randint(3, 64, (2, 20))
    torch.testing.assert_close(logits(mla, ids), model(input_ids=ids).logits, rtol=1e-8, atol=1e-8)


def test_the_latent_reconstructs_k_nope_and_v_at_the_cap(one_thread):
    model = small_llama()  # 4 heads, 2 KV heads of 16, hidden 32: cap min(64, 32) = 32
    mla, report = convert(model, XEcoMLAConfig(kv_lora_rank=32, rope_dim=8))
    cfg, shape = mla.config, ModelShape.of(model.config)
    assert (cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim) == (32, 8, 8, 16)
    assert cfg.q_lora_rank is None and not cfg.tie_word_embeddings
    assert isinstance(mla.model.layers[0].self_attn.kv_a_layernorm, nn.Identity)
    for src, dst in zip(model.model.layers, mla.model.layers):
        attn = dst.self_attn
        assert attn.kv_a_proj_with_mqa.weight.shape == (32 + 8, 32)
        assert attn.kv_b_proj.weight.shape == (4 * (8 + 16), 32)
        got = (attn.kv_b_proj.weight @ attn.kv_a_proj_with_mqa.weight[:32]).view(4, 24, 32)
        kv = repeated_kv(src.self_attn.k_proj.weight, src.self_attn.v_proj.weight, shape).view(2, 4, 16, 32)
        expected = torch.cat([kv[0][:, nope_rows(16, 8)], kv[1]], dim=1)  # per head [K_nope; V]
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert all(abs(row["svd_energy"] - 1) < 1e-12 for row in report["layers"])


def test_the_svd_of_the_repeated_stack_comes_from_the_unrepeated_one():
    model = small_llama()
    attn, shape = model.model.layers[0].self_attn, ModelShape.of(model.config)
    u, sigma, vh = repeated_kv_svd(attn.k_proj.weight, attn.v_proj.weight, shape)
    full = repeated_kv(attn.k_proj.weight, attn.v_proj.weight, shape)
    torch.testing.assert_close(sigma, torch.linalg.svdvals(full)[:len(sigma)])
    torch.testing.assert_close(u.T @ u, torch.eye(len(sigma), dtype=torch.float64))
    torch.testing.assert_close(u @ torch.diag(sigma) @ vh, full)
    peaks = u.gather(0, u.abs().argmax(0, keepdim=True))  # canonical signs (column_signs)
    assert (peaks > 0).all()


def test_rope_rows_are_whole_pairs_at_the_frequencies_deepseek_turns_them():
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rows = rope_rows(16, 8)
    assert rows.tolist() == [0, 8, 2, 10, 4, 12, 6, 14]  # (re, im) of Llama pairs 0, 2, 4, 6
    assert sorted(rows.tolist() + nope_rows(16, 8).tolist()) == list(range(16))
    llama = small_llama().config
    deepseek = DeepseekV3Config(qk_rope_head_dim=8, rope_parameters=llama.rope_parameters)
    torch.testing.assert_close(DeepseekV3RotaryEmbedding(deepseek).inv_freq,
                               LlamaRotaryEmbedding(llama).inv_freq[rows[0::2]])


def test_energy_ranks_are_padded_multiples_that_meet_the_energy(one_thread):
    assert energy_rank([0.5, 0.9, 0.96, 1.0], 0.95, 8, 32) == 8
    assert energy_rank([0.1] * 9 + [1.0], 0.95, 8, 12) == 12  # 10 rounds to 16, capped at 12
    model = low_rank_first_layer(small_llama())
    mla, report = convert(model, XEcoMLAConfig(energy=0.9, rope_dim=8))
    ranks = report["layer_ranks"]
    assert ranks[0] == 8 and ranks[1] > 8 and all(r % 8 == 0 for r in ranks)
    assert report["padded_to_layer_max"] and mla.config.kv_lora_rank == max(ranks)
    for row in report["layers"]:
        assert row["svd_energy"] >= 0.9
    # the rank below layer 1's misses the energy there: the rule took the smallest multiple
    shares = convert(model, XEcoMLAConfig(kv_lora_rank=ranks[1] - 8, rope_dim=8))[1]["layers"]
    assert shares[1]["svd_energy"] < 0.9
    # layer 0 sits zero-padded in the wider latent: its weights are the rank-8 ones plus zeros
    alone, _ = convert(model, XEcoMLAConfig(kv_lora_rank=8, rope_dim=8))
    a, b = mla.model.layers[0].self_attn, alone.model.layers[0].self_attn
    width = mla.config.kv_lora_rank
    assert torch.equal(a.kv_a_proj_with_mqa.weight[8:width], torch.zeros(width - 8, 32, dtype=torch.float64))
    padded = pad_latent({"kv_a_proj_with_mqa": b.kv_a_proj_with_mqa.weight,
                         "kv_b_proj": b.kv_b_proj.weight}, width)
    torch.testing.assert_close(a.kv_a_proj_with_mqa.weight, padded["kv_a_proj_with_mqa"])
    torch.testing.assert_close(a.kv_b_proj.weight, padded["kv_b_proj"])


def test_zero_padding_the_latent_keeps_the_logits(one_thread):
    from transformers import DeepseekV3ForCausalLM

    model = small_llama()
    narrow = get_transform("xecomla").apply(model, None, XEcoMLAConfig(kv_lora_rank=8, rope_dim=8))
    config = copy.deepcopy(narrow.config)
    config.kv_lora_rank = 24
    wide = DeepseekV3ForCausalLM(config).to(torch.float64).eval()
    state = narrow.state_dict()
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}.self_attn."
        names = {name: prefix + name + ".weight" for name in ("kv_a_proj_with_mqa", "kv_b_proj")}
        padded = pad_latent({k: state[v] for k, v in names.items()}, 24)
        state.update({names[k]: padded[k] for k in names})
    from rearqa.reader.backbone.transmla.modeling import install_mla

    wide = install_mla(wide)
    wide.load_state_dict(state, strict=True)
    ids = torch.randint(3, 64, (2, 20))
    torch.testing.assert_close(logits(wide, ids), logits(narrow, ids), rtol=1e-12, atol=1e-12)
    # and through the absorbed decode path with a cache
    out_w = wide.generate(input_ids=ids[:1, :8], max_new_tokens=6, do_sample=False, pad_token_id=0)
    out_n = narrow.generate(input_ids=ids[:1, :8], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(out_w, out_n)


@pytest.mark.parametrize("settings,match", [
    ({"rope_dim": 7}, "must be even"),
    ({"rope_dim": 12}, r"one of \[2, 4, 8, 16\]"),
    ({"kv_lora_rank": 40, "rope_dim": 8}, r"takes 1\.\.32"),
    ({"kv_lora_rank": 0}, "positive integer"),
    ({"energy": 1.5}, r"in \(0, 1\]"),
    ({"energy": 0}, r"in \(0, 1\]"),
    ({"rank_multiple": 0}, "positive integer"),
])
def test_bad_settings_are_refused_with_the_valid_range(settings, match):
    with pytest.raises(ConfigError, match=match):
        XEcoMLAConfig(**settings).check_model(small_llama().config)


def test_calibration_text_is_refused(one_thread):
    with pytest.raises(ConfigError, match="no calibration text"):
        get_transform("xecomla").apply(small_llama(), torch.zeros(1, 4, dtype=torch.long), XEcoMLAConfig())


@pytest.mark.parametrize("latent_norm,fmt", [(False, "hf_only"), (True, "deepseek_v3_mla")])
def test_export_and_load_round_trip(one_thread, tmp_path, latent_norm, fmt):
    transform = get_transform("xecomla")
    cfg = XEcoMLAConfig(energy=0.9, rope_dim=8, latent_norm=latent_norm)
    mla = transform.apply(low_rank_first_layer(small_llama()), None, cfg).float()  # a saved dtype
    ids = torch.randint(3, 64, (2, 20))
    expected = logits(mla, ids)
    transform.export(mla, tmp_path, cfg, source={"kind": "test"})
    manifest = read_manifest(tmp_path)
    assert manifest.transform == "xecomla" and manifest.export_format == fmt
    assert manifest.label == "xecomla(energy 0.9+8" + (", latent norm)" if latent_norm else ")")
    assert manifest.kv_bytes_per_token == 2 * (mla.config.kv_lora_rank + 8) * 4  # 2 layers, float32
    report = (tmp_path / REPORT_FILE).read_text()
    assert '"layer_ranks"' in report and '"padded_to_layer_max": true' in report
    loaded = load_causal_lm(tmp_path)
    assert torch.equal(logits(loaded, ids), expected)


@pytest.mark.slow
def test_smollm2_upcycles_by_the_energy_rule_quickly(reader_dir):
    from transformers import AutoModelForCausalLM

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = AutoModelForCausalLM.from_pretrained(reader_dir, dtype=torch.float32).eval()
        mla, report = convert(model, XEcoMLAConfig(energy=0.95, rope_dim=32))
    finally:
        torch.set_num_threads(before)
    ranks = report["layer_ranks"]
    assert len(ranks) == 30 and all(r % 8 == 0 and 8 <= r <= 384 for r in ranks)
    assert mla.config.kv_lora_rank == max(ranks) < 384
    assert all(row["svd_energy"] >= 0.95 for row in report["layers"])
    assert torch.isfinite(logits(mla, torch.tensor([[1, 504, 3287, 282, 4606, 314]]))).all()
