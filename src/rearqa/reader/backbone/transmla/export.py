"""Export a converted reader as a DeepSeek-V3 checkpoint that stock transformers and vLLM load.

The converted model already has DeepSeek's layout (package docstring), so the export is mostly
what the two loaders need to see (efficiency-methods.md section 2):
  - `first_k_dense_replace` = the layer count and no routed experts: every MLP stays dense;
  - `tie_word_embeddings` false with `lm_head.weight` saved (vLLM's DeepSeek model ties nothing);
  - rope rows already interleaved (`rope_interleave`: vLLM's DeepSeek rotary is GPT-J style);
  - value heads optionally zero-padded (`pad_v_to`): each head's value rows of kv_b_proj get zero
    rows and o_proj zero columns to match, so the function is unchanged while (nope, rope, v)
    becomes a shape vLLM's CUDA prefill accepts, e.g. (64, 64, 128) for SmolLM2.
vLLM's DeepSeek model always normalises the latent (kv_a_layernorm), so only a reader converted
with `latent_norm` exports; without it the function cannot be expressed there.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rearqa.config_errors import ConfigError


def check_exportable(model: nn.Module) -> None:
    """ConfigError naming the fix when vLLM's DeepSeek model could not run `model`'s function."""
    config = model.config
    if not getattr(config, "latent_norm", True):
        raise ConfigError("this reader was converted without the latent RMSNorm, which vLLM's "
                          "DeepSeek model always applies: convert with --latent-norm (transmla."
                          "latent_norm: true) to export it, or serve it on the transformers engine")
    if config.q_lora_rank is not None:
        raise ConfigError(f"q_lora_rank={config.q_lora_rank}: the TransMLA export keeps a full q_proj")
    if getattr(config, "attention_bias", False):
        raise ConfigError("attention biases: vLLM's DeepSeek model has none")


@torch.no_grad()
def pad_values(model: nn.Module, width: int) -> nn.Module:
    """`model` with every head's value widened to `width` by zero rows in kv_b_proj and zero
    columns in o_proj (exact: the padded value dims are zero and read by nothing)."""
    config = model.config
    heads, nope, v = config.num_attention_heads, config.qk_nope_head_dim, config.v_head_dim
    if width == v:
        return model
    if width < v:
        raise ConfigError(f"pad_v_to={width}: the value heads are already {v} wide")
    for layer in model.model.layers:
        attn = layer.self_attn
        kv_b = attn.kv_b_proj.weight.view(heads, nope + v, -1)  # (H, nope + v, r)
        padded = torch.cat([kv_b, kv_b.new_zeros(heads, width - v, kv_b.shape[-1])], dim=1)
        attn.kv_b_proj = _linear(padded.reshape(heads * (nope + width), -1))
        o = attn.o_proj.weight.view(-1, heads, v)  # (hidden, H, v)
        attn.o_proj = _linear(torch.cat([o, o.new_zeros(o.shape[0], heads, width - v)], dim=2)
                              .reshape(o.shape[0], -1))
        attn.v_head_dim = width
    config.v_head_dim = width
    return model


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    layer.weight.copy_(weight)
    return layer


def export_deepseek_v3(model: nn.Module, out_dir: str | Path, pad_v_to: int = 0, tokenizer=None) -> Path:
    """Write `model` (a converted DeepseekV3ForCausalLM with a latent norm) to `out_dir`."""
    check_exportable(model)
    if pad_v_to:
        pad_values(model, pad_v_to)
    config = model.config
    config.architectures = ["DeepseekV3ForCausalLM"]
    config.first_k_dense_replace = config.num_hidden_layers  # every MLP dense, in both loaders
    config.tie_word_embeddings = False
    config.rope_interleave = True
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)  # untied, so lm_head.weight is written
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
