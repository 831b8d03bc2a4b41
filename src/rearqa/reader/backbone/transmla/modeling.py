"""Multi-head latent attention with a compressed cache and absorbed decode (DeepSeek-V2 MLA).

DeepSeek-AI, "DeepSeek-V2" (2024), section 2.1; TransMLA (Meng et al., 2025) produces the weights.
Per token and layer the cache holds only the latent c = kv_a(x)[:r] (kv_lora_rank wide) and the
shared rotary key k_rope (after RoPE): r + rope values instead of a key and a value per KV head.
Attention needs per-head keys k_nope[h] = W_UK[h] c and values v[h] = W_UV[h] c, and there are two
ways to get them:
  expanded  (prefill, many queries)  materialise k_nope and v for every cached token, then run the
            configured attention kernel (sdpa): cheap when queries are as many as keys;
  absorbed  (decode, a few queries)  fold W_UK into the query, q_lat[h] = W_UK[h]^T q_nope[h], so
            logits = q_lat . c + q_rope . k_rope straight off the cache, and apply W_UV after
            attention to the weighted sum of latents: the cache is read once and never expanded.
Both compute the same function (tests/reader/backbone/test_transmla_modeling.py). A decode step
(one query token, a boolean or no mask, no gradient) runs the absorbed maths through the kernel op
`rearqa.kernels.mla_decode`: the split-KV Triton kernel on CUDA, on the CPU its torch reference,
which takes the same steps in the same dtypes as the torch path `_absorbed_torch` (equal bit for
bit, a test). TPLA overrides `_absorbed` whole, so its sharded decode stays torch.

`MLAAttention` subclasses transformers' `DeepseekV3Attention` so it loads the same weights; a
converted reader without the latent RMSNorm (`config.latent_norm` False) runs with an identity
there, which stock DeepSeek models (and vLLM) cannot express.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3Attention, apply_rotary_pos_emb, apply_rotary_pos_emb_interleave)

from rearqa.kernels.mla_decode import mla_decode
from rearqa.reader.backbone.base import dtype_bytes

# Query lengths up to this use the absorbed path: decode steps (1 token) and short appends.
ABSORB_MAX_QUERY = 16


class MLAAttention(DeepseekV3Attention):
    """DeepseekV3Attention with an optional latent norm and the absorbed decode path."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        if not getattr(config, "latent_norm", True):
            self.kv_a_layernorm = nn.Identity()
        self.absorb_max_query = ABSORB_MAX_QUERY  # set to a huge value to absorb everywhere (tests)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None, past_key_values=None, **kwargs):
        batch, length = hidden_states.shape[:-1]
        nope, rope, r = self.qk_nope_head_dim, self.qk_rope_head_dim, self.kv_lora_rank
        q = self.q_proj(hidden_states).view(batch, length, -1, nope + rope).transpose(1, 2)  # (B, H, T, n+p)
        q_nope, q_rot = q.split([nope, rope], dim=-1)
        latent, k_rot = self.kv_a_proj_with_mqa(hidden_states).split([r, rope], dim=-1)
        latent = self.kv_a_layernorm(latent).view(batch, 1, length, r)  # (B, 1, T, r)
        k_rot = k_rot.view(batch, 1, length, rope)  # (B, 1, T, p)
        cos, sin = position_embeddings
        rotate = apply_rotary_pos_emb_interleave if self.config.rope_interleave else apply_rotary_pos_emb
        q_rot, k_rot = rotate(q_rot, k_rot, cos, sin)
        if past_key_values is not None:  # the cache holds the latent and the rotary key only
            latent, k_rot = past_key_values.update(latent, k_rot, self.layer_idx)  # (B, 1, S, .)
        # The absorbed path reads kv_b_proj's weight; a wrapped kv_b_proj (a LoRA adapter being
        # trained on it) must run as a module, so such a layer expands instead.
        if length <= self.absorb_max_query and type(self.kv_b_proj) is nn.Linear:
            out = self._absorbed(q_nope, q_rot, latent, k_rot, attention_mask)
        else:
            out = self._expanded(torch.cat([q_nope, q_rot], dim=-1), latent, k_rot, attention_mask, **kwargs)
        return self.o_proj(out.reshape(batch, length, -1)), None

    def _up_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_UK (H, nope, r), W_UV (H, v, r)) from kv_b_proj's per-head [k_nope; v] rows."""
        w = self.kv_b_proj.weight.view(self.num_heads, self.qk_nope_head_dim + self.v_head_dim, -1)
        return w[:, :self.qk_nope_head_dim], w[:, self.qk_nope_head_dim:]

    def _absorbed(self, q_nope, q_rot, latent, k_rot, attention_mask) -> torch.Tensor:
        """(B, T, H, v): a decode step through the kernel op where it applies, else torch."""
        if _kernel_step(q_nope.shape[2], attention_mask, q_nope, latent, self.kv_b_proj.weight):
            return self._decode_step(q_nope, q_rot, latent, k_rot, attention_mask)
        return self._absorbed_torch(q_nope, q_rot, latent, k_rot, attention_mask)

    def _absorbed_torch(self, q_nope, q_rot, latent, k_rot, attention_mask) -> torch.Tensor:
        w_uk, w_uv = self._up_weights()
        batch, heads, length, _ = q_nope.shape
        q_lat = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)  # (B, H, T, r)
        # Heads and queries folded into one row axis against the single latent "head" (MQA):
        # a broadcast matmul over heads would copy the cache once per head.
        rows = heads * length
        scores = (q_lat.reshape(batch, rows, -1) @ latent[:, 0].transpose(-1, -2)
                  + q_rot.reshape(batch, rows, -1) @ k_rot[:, 0].transpose(-1, -2))  # (B, H*T, S)
        scores = _masked(scores.view(batch, heads, length, -1).float() * self.scaling, attention_mask)
        probs = scores.softmax(dim=-1).to(latent.dtype)  # (B, H, T, S)
        out_lat = (probs.reshape(batch, rows, -1) @ latent[:, 0]).view(batch, heads, length, -1)  # (B, H, T, r)
        return torch.einsum("bhtr,hvr->bthv", out_lat, w_uv)  # (B, T, H, v)

    def _decode_step(self, q_nope, q_rot, latent, k_rot, attention_mask) -> torch.Tensor:
        """`_absorbed_torch` for one query token, through the mla_decode kernel op (B, 1, H, v)."""
        w_uk, w_uv = self._up_weights()
        batch, keys = q_nope.shape[0], latent.shape[2]
        q_lat = torch.einsum("bhn,hnr->bhr", q_nope[:, :, 0], w_uk)  # (B, H, r)
        seq_lens = torch.full((batch,), keys, dtype=torch.int32, device=latent.device)
        kv_mask = None  # (B, S) bool: the query's row of a (B or 1, 1, 1, >= S) mask
        if attention_mask is not None:
            kv_mask = attention_mask[:, 0, -1, -keys:].expand(batch, keys)
        out_lat = mla_decode(q_lat, q_rot[:, :, 0], latent[:, 0], k_rot[:, 0], seq_lens, None, kv_mask,
                             scale=self.scaling)  # (B, H, r)
        return torch.einsum("bhr,hvr->bhv", out_lat, w_uv)[:, None]  # (B, 1, H, v)

    def _expanded(self, query, latent, k_rot, attention_mask, **kwargs) -> torch.Tensor:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import eager_attention_forward

        key, value = self.expand_kv(latent, k_rot)  # (B, H, S, n+p), (B, H, S, v)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                           eager_attention_forward)
        out, _ = attention(self, query, key, value, attention_mask,
                           dropout=0.0 if not self.training else self.attention_dropout,
                           scaling=self.scaling, **kwargs)
        return out  # (B, T, H, v)


def _kernel_step(length: int, attention_mask: torch.Tensor | None, *tensors: torch.Tensor) -> bool:
    """Whether a step may run the mla_decode op: one query token, a boolean mask or none (an
    additive float mask could carry biases the op does not take), and no autograd graph to keep
    (the Triton kernel has no backward)."""
    if length != 1 or (attention_mask is not None and attention_mask.dtype != torch.bool):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`scores` (B, H, T, S) with the attention mask applied: transformers passes an additive
    float mask, a boolean one (True = attend), or None when the attention is plain causal. Masked
    scores get the lowest finite float, not -inf: a padding query with every key masked then
    attends uniformly instead of producing NaN, which the next layer would read as a key."""
    length, keys = scores.shape[-2:]
    lowest = torch.finfo(scores.dtype).min
    if mask is None:  # causal: query i is the (keys - length + i)-th token
        allowed = torch.ones(length, keys, dtype=torch.bool, device=scores.device).tril(keys - length)
        return scores.masked_fill(~allowed, lowest)
    mask = mask[..., -keys:] if mask.shape[-1] > keys else mask
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, lowest)
    return (scores + mask.float()).clamp_min(lowest)


def install_mla(model: nn.Module) -> nn.Module:
    """`model` (a DeepseekV3ForCausalLM) with every layer's attention replaced by MLAAttention on
    the same weights (an identity latent norm where `config.latent_norm` is False)."""
    for i, layer in enumerate(model.model.layers):
        old = layer.self_attn
        if isinstance(old, MLAAttention):
            continue
        new = MLAAttention(model.config, i).to(device=old.q_proj.weight.device, dtype=old.q_proj.weight.dtype)
        state = {k: v for k, v in old.state_dict().items()
                 if not (k.startswith("kv_a_layernorm") and isinstance(new.kv_a_layernorm, nn.Identity))}
        new.load_state_dict(state, strict=True)
        new.train(old.training)
        layer.self_attn = new
    return model


def load_mla(model_dir: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """A converted reader saved by save_pretrained (or the DeepSeek-V3 export), with MLAAttention."""
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging as hf_logging

    kwargs = {"dtype": dtype} if dtype is not None else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # without a latent norm its weight is missing by design
    try:
        model = DeepseekV3ForCausalLM.from_pretrained(model_dir, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    return install_mla(model).eval()


def mla_kv_bytes_per_token(config, dtype: torch.dtype | str) -> int:
    """KV cache bytes one token costs: kv_lora_rank + rope values per layer (SmolLM2 at 96+64 in
    bf16: 30 * 160 * 2 = 9,600, against GQA's 23,040)."""
    return config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim) * dtype_bytes(dtype)


def measured_kv_bytes(cache) -> int:
    """Bytes of the tensors a transformers cache holds (all layers)."""
    total = 0
    for layer in cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
    return total
