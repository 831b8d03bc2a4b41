"""scripts/backbone_cost.py's counting on tiny Llamas (parameters, KV bytes, decode-step FLOPs),
its parity bookkeeping and its refusal of a bad --reader. Nothing here is timed and vLLM is not
started: the script's real run is what measures speed (docs/backbone.md)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from rearqa.testing import tiny_llama

SCRIPT = Path(__file__).parents[3] / "scripts" / "backbone_cost.py"


@pytest.fixture(scope="module")
def cost():
    spec = importlib.util.spec_from_file_location("backbone_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def llama(kv_heads: int = 2, intermediate: int = 64, layers: int = 2):
    """4 query heads of 8 over `kv_heads` KV heads, hidden 32, untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=kv_heads,
                         max_position_embeddings=256, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def test_parameters_split_into_all_and_the_layers_attention_and_mlp(cost):
    model = tiny_llama(vocab_size=50)  # hidden 16, 2 heads of 8, 1 KV head, MLP 32, tied
    counts = cost.parameter_counts(model)
    attn = 16 * 16 + 2 * (16 * 8) + 16 * 16  # q, k, v, o
    mlp = 3 * 16 * 32  # gate, up, down
    assert counts["attn_mlp"] == 2 * (attn + mlp)
    norms = 2 * 2 * 16 + 16
    assert counts["total"] == counts["attn_mlp"] + 50 * 16 + norms  # the tied head counted once


def test_kv_bytes_are_layers_x_key_and_value_x_kv_heads_x_head_dim_in_bf16(cost, tmp_path):
    from transformers import LlamaConfig

    smollm2 = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, head_dim=64)
    assert cost.kv_bytes_per_token(tmp_path, smollm2) == 30 * 2 * 3 * 64 * 2 == 23_040
    smollm2.num_key_value_heads = 1
    assert cost.kv_bytes_per_token(tmp_path, smollm2) == 7_680


def test_decode_step_flops_are_the_matmuls_of_one_token_over_the_cache(cost):
    model = llama()
    hidden, heads, kv, head_dim, mlp, layers, vocab = 32, 4, 2, 8, 64, 2, 300
    weights = layers * (hidden * hidden * 2 + 2 * hidden * kv * head_dim + 3 * hidden * mlp) + hidden * vocab
    for context in (8, 40):
        attention = layers * 2 * (2 * heads * head_dim * (context + 1))  # q.k and p.v per head
        assert cost.decode_step_flops(model, context) == 2 * weights + attention


def test_decode_step_flops_grow_with_context_and_fall_with_kv_heads_and_mlp_width(cost):
    full = cost.decode_step_flops(llama(), 40)
    assert cost.decode_step_flops(llama(), 8) < full
    assert cost.decode_step_flops(llama(kv_heads=1), 40) < full
    assert cost.decode_step_flops(llama(intermediate=32), 40) < full
    model = llama()
    cost.decode_step_flops(model, 8)
    assert model.config._attn_implementation != "eager"  # the counting's eager attention is undone


@pytest.mark.parametrize("spec, message", [("rag-ft", "expected NAME=DIR"), ("=x", "expected NAME=DIR"),
                                           ("base=MISSING", "has no config.json")])
def test_a_bad_reader_is_refused_with_what_is_accepted(cost, tmp_path, spec, message):
    spec = spec.replace("MISSING", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match=message):
        cost.main(["--reader", spec, "--out", str(tmp_path / "out.json")])


def test_a_reader_name_given_twice_is_refused(cost, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="names must differ"):
        cost.parse_readers([f"a={tmp_path}", f"a={tmp_path}"])


def test_parity_counts_exact_prompts_and_the_first_divergence(cost):
    result = cost.parity([[1, 2, 3], [1, 2, 3], [4, 5]], [[1, 2, 3], [1, 9, 3], [4, 5, 6]])
    assert result["exact"] == 1 and result["first_divergence"] == [None, 1, 2]


def test_rows_give_ratios_against_the_first_reader(cost):
    def reader(params, kv, flops, tps, vllm):
        return {"params": {"total": params, "attn_mlp": params / 2}, "kv_bytes_per_token": kv,
                "decode_step_flops": flops, "hf": {"tokens_per_s": tps}, "vllm": vllm}

    result = {"readers": {"base": reader(100e6, 300, 2e9, 10.0, {"decode_tokens_per_s": 20.0}),
                          "small": reader(50e6, 100, 1e9, 15.0, {"error": "vLLM worker exited 1"})}}
    base, small = cost.rows_of(result, "base")
    assert base["params_m_x"] == base["hf_tps_x"] == base["vllm_tps_x"] == 1
    assert (small["params_m_x"], small["kv_bytes_x"], small["gflops_x"], small["hf_tps_x"]) == (0.5, 1 / 3, 0.5, 1.5)
    assert small["vllm_tps"] is None and small["vllm_error"]
    assert "failed" in cost.markdown_table([base, small], 1000)
