"""KV-head merging: exact where nothing is dropped (3 -> 3 heads; 3 -> 1 when each frequency's keys
and the values span one head's worth across the group), the key merge commutes with RoPE, bad
head counts are refused with the valid ones, and a merged reader exports as a stock Llama that
loads by path."""
from __future__ import annotations

import json

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone import get_transform, read_manifest
from rearqa.reader.backbone.kv_merge.config import KVMergeConfig
from rearqa.reader.backbone.kv_merge.convert import convert, merge_keys, scale_query
from rearqa.reader.backbone.kv_merge.transform import REPORT_FILE
from rearqa.reader.backbone.loading import load_causal_lm
from rearqa.testing import randomize_matrices


def small_llama(heads=6, kv_heads=3, head_dim=16, seed=0):
    """`heads` query heads, `kv_heads` KV heads of `head_dim`, hidden 48, 2 layers, float64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                         max_position_embeddings=64, rope_parameters={"rope_type": "default",
                                                                      "rope_theta": 10000.0},
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return randomize_matrices(LlamaForCausalLM(config).eval()).to(torch.float64)


@torch.no_grad()
def mergeable(model, group: int):
    """`model` with every group of `group` neighbouring KV heads holding one head's worth: each
    member's key is a complex scalar per frequency times a shared key (rotated and scaled pairs),
    each member's value an invertible map of a shared value. Merging the group drops nothing."""
    d = model.config.head_dim
    half = d // 2
    for layer in model.model.layers:
        attn = layer.self_attn
        k = attn.k_proj.weight.view(-1, d, attn.k_proj.weight.shape[1])  # (n, d, D)
        v = attn.v_proj.weight.view(-1, d, attn.v_proj.weight.shape[1])
        for first in range(0, k.shape[0], group):
            x, y = k[first, :half].clone(), k[first, half:].clone()
            for g in range(first, first + group):
                alpha = torch.randn(half, 1, dtype=torch.complex128)  # (F, 1)
                k[g, :half], k[g, half:] = alpha.real * x - alpha.imag * y, alpha.real * y + alpha.imag * x
                if g > first:
                    v[g] = (torch.eye(d, dtype=v.dtype) + 0.3 * torch.randn(d, d, dtype=v.dtype)) @ v[first]
    return model


def logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def test_three_to_three_heads_is_the_original_model(one_thread):
    model = small_llama()
    calib = torch.randint(3, 64, (4, 24))
    merged, report = convert(model, calib, KVMergeConfig(kv_heads=3))
    ids = torch.randint(3, 64, (2, 20))
    torch.testing.assert_close(logits(merged, ids), logits(model, ids), rtol=1e-9, atol=1e-9)
    assert all(abs(row["key_energy"] - 1) < 1e-12 and abs(row["value_energy"] - 1) < 1e-12
               for row in report["layers"])


@pytest.mark.parametrize("heads,kv_heads,target", [(6, 3, 1), (8, 4, 2), (6, 6, 3)])
def test_merging_heads_that_hold_one_heads_worth_is_exact(one_thread, heads, kv_heads, target):
    """The GQA mapping (query head h reads old head h // (H / n), new head h // (H / m)), the
    complex query fold and the o_proj fold, on a model where the merge drops nothing."""
    model = mergeable(small_llama(heads, kv_heads), kv_heads // target)
    merged, report = convert(model, torch.randint(3, 64, (4, 24)), KVMergeConfig(kv_heads=target))
    assert merged.config.num_key_value_heads == target
    assert merged.model.layers[0].self_attn.k_proj.weight.shape == (target * 16, 48)
    ids = torch.randint(3, 64, (2, 20))
    torch.testing.assert_close(logits(merged, ids), logits(model, ids), rtol=1e-8, atol=1e-8)
    assert all(row["key_energy"] > 1 - 1e-9 and row["value_energy"] > 1 - 1e-9 for row in report["layers"])


def test_the_key_merge_commutes_with_rope():
    """Rotate-then-merge == merge-then-rotate for any complex coefficients, and a query folded with
    conj(u) keeps its scores against the merged key whatever the two positions are."""
    from transformers.models.llama.modeling_llama import rotate_half

    torch.manual_seed(0)
    s, t, d = 3, 7, 16
    keys = torch.randn(s, t, d, dtype=torch.float64)  # (members, T, d)
    u = torch.randn(d // 2, s, dtype=torch.complex128)
    inv_freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * inv_freq  # (T, F)
    cos, sin = torch.cat([angle, angle], -1).cos(), torch.cat([angle, angle], -1).sin()  # (T, d)

    def rope(x):  # (..., T, d), Llama's rotate_half layout
        return x * cos + rotate_half(x) * sin
    torch.testing.assert_close(merge_keys(rope(keys), u), rope(merge_keys(keys, u)))
    # keys that are u[:, l] times one key c: member l's scores == the folded query's on c
    c = torch.randn(t, d, dtype=torch.float64)
    half = d // 2
    z = torch.complex(c[:, :half], c[:, half:]) * u[:, 1]  # (T, F)
    member = torch.cat([z.real, z.imag], -1)
    q = torch.randn(t, d, dtype=torch.float64)
    torch.testing.assert_close(rope(q) @ rope(member).T, rope(scale_query(q, u[:, 1])) @ rope(c).T)


def test_a_real_merge_shrinks_the_cache_and_keeps_logits_finite(one_thread):
    model = small_llama()
    merged, report = convert(model, torch.randint(3, 64, (4, 24)), KVMergeConfig(kv_heads=1))
    assert merged.config.num_key_value_heads == 1
    assert all(0 < row["key_energy"] < 1 and 0 < row["value_energy"] < 1 for row in report["layers"])
    out = logits(merged, torch.randint(3, 64, (1, 12)))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kv_heads,match", [(0, "positive integer"), (2, r"one of \[1, 3\]"),
                                            (4, r"one of \[1, 3\]"), (True, "positive integer")])
def test_impossible_head_counts_are_refused_with_the_valid_ones(kv_heads, match):
    model = small_llama()
    with pytest.raises(ConfigError, match=match):
        KVMergeConfig(kv_heads=kv_heads).check_model(model.config)


def test_a_merged_reader_exports_as_a_stock_llama_and_loads_by_path(one_thread, tmp_path):
    from transformers import AutoModelForCausalLM

    model = small_llama().to(torch.float32)  # a dtype the manifest counts KV bytes in
    transform = get_transform("kv_merge")
    cfg = KVMergeConfig(kv_heads=1, calib_passages=4, calib_tokens=24)
    merged = transform.apply(model, torch.randint(3, 64, (4, 24)), cfg)
    transform.export(merged, tmp_path, cfg)
    manifest = read_manifest(tmp_path)
    assert manifest.export_format == "llama_fewer_kv" and manifest.vllm_servable
    assert manifest.kv_bytes_per_token == 2 * 2 * 1 * 16 * 4  # K and V, 2 layers, 1 head of 16, fp32
    assert manifest.label == "kv_merge(1 kv heads)"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 1
    assert (tmp_path / REPORT_FILE).is_file()
    ids = torch.randint(3, 64, (1, 10))
    for loaded in (load_causal_lm(tmp_path, torch.float32),
                   AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)):
        torch.testing.assert_close(logits(loaded, ids), logits(merged, ids))


def test_convert_takes_kv_heads_and_refuses_other_transforms_options():
    from rearqa.app.convert_cmd import transform_config

    kv_merge = get_transform("kv_merge")
    cfg = transform_config(kv_merge, {"kv_heads": 1, "calib_passages": 32, "rope_dim": None})
    assert (cfg.kv_heads, cfg.calib_passages, cfg.calib_tokens) == (1, 32, 256)
    with pytest.raises(ConfigError, match="does not take --rope-dim"):
        transform_config(kv_merge, {"rope_dim": 64})
    with pytest.raises(ConfigError, match="does not take --kv-heads"):
        transform_config(get_transform("transmla"), {"kv_heads": 1})


def test_rearqa_convert_writes_a_merged_reader_from_a_calibration_file(one_thread, tmp_path):
    """The command line end to end on a tiny checkpoint, with the calibration carried in a file
    (a home that holds only a reader directory will do then)."""
    from typer.testing import CliRunner

    from rearqa.app.cli import app
    from rearqa.reader.backbone.transmla.calibration import CalibrationRecord, save_calibration
    from rearqa.testing import tiny_tokenizer

    source = tmp_path / "tiny"
    small_llama().to(torch.float32).save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    home = tmp_path / "home"
    (home / "models" / "smollm2-135m-instruct").mkdir(parents=True)
    (home / "models" / "smollm2-135m-instruct" / "config.json").write_text("{}")
    tokens = torch.randint(3, 64, (4, 24))
    calib = save_calibration(tmp_path / "calib.json", tokens, CalibrationRecord.of(tokens, "test", 0))
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["convert", "--transform", "kv_merge", "--from", str(source),
                                      "--kv-heads", "1", "--calib-file", str(calib), "--dtype",
                                      "float32", "--home", str(home), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "kv_merge(1 kv heads)" in result.output
    manifest = read_manifest(out)
    assert manifest.settings["kv_heads"] == 1 and manifest.calibration["source"] == "test"
    assert load_causal_lm(out).config.num_key_value_heads == 1
    bad = CliRunner().invoke(app, ["convert", "--transform", "kv_merge", "--from", str(source),
                                   "--kv-heads", "2", "--calib-file", str(calib), "--home", str(home),
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "one of [1, 3]" in str(bad.exception) + bad.output
