"""TPLA decode attention: the g-shard approximation of absorbed MLA decode.

Absorbed MLA decode (transmla/modeling.py) scores every cached token with
    logit[h, s] = scale * (q_lat[h] . c_s + q_rope[h] . k_rope_s),   q_lat[h] = W_UK[h]^T q_nope[h]
and returns W_UV[h] sum_s p[h, s] c_s. TPLA (arXiv 2508.15881) slices the latent c, q_lat and the
latent columns of W_UV into g contiguous shards (after the rotation of rotation.py). Shard j:
    logit_j[h, s] = scale * (q_lat[h, j] . c_{s, j} + q_rope[h] . k_rope_s)
    out_j[h]      = W_UV[h, :, j] sum_s softmax_s(logit_j[h]) c_{s, j}
and the layer output is sum_j o_proj(out_j): one all-reduce across devices. With g = 1 this is
absorbed MLA exactly; with g > 1 each shard's softmax sees only its part of the no-RoPE logits,
so the result is an approximation.

Choices here where the paper (as summarised in efficiency-methods.md) says nothing specific:
  - the rotary logits q_rope . k_rope are counted in full on every shard (the rotary key and the
    query's rope part are replicated, as the brief asks), not split 1/g per shard;
  - every shard keeps the full model's softmax scale 1/sqrt(nope + rope), not a per-shard one;
    an option not in the paper's description, `nope_scale` = g, multiplies each shard's no-RoPE
    logits by g so that, after a balancing rotation, each is an estimate of the full logits
    rather than a cooler share of them (measured in scripts/tpla_error.py; default 1);
  - shards are contiguous slices of the rotated latent (pca_rotation deals components
    round-robin so contiguous slices are balanced);
  - query lengths 1..absorb_max_query (ABSORB_MAX_QUERY: decode steps and short appends) take the
    sharded path; longer ones (prefill) run full MLA through the expanded path;
  - in one process (rank None) the shards' outputs are summed before o_proj, which is the same
    linear map as summing o_proj of each (o_proj has no bias).

`TPLAAttention` with `rank=None` simulates all g shards in one process; with `rank=j` it is one
device's share (dist.py): its cache holds only latent slice j (plus the rotary key), its decode
reads its W_UK/W_UV shard, and it all-reduces o_proj's output. Prefill on a rank runs full MLA
replicated (no communication; the full kv_b_proj stays for it) and caches only the rank's slice,
so a rank needs its prefill in one call, from an empty cache.
"""
from __future__ import annotations

import torch
from torch import nn

from rearqa.reader.backbone.transmla.modeling import (MLAAttention, _masked, apply_rotary_pos_emb,
                                                      apply_rotary_pos_emb_interleave)


def shard_attention(q_nope, q_rot, latent, k_rot, w_uk, w_uv, scaling: float, attention_mask,
                    nope_scale: float = 1.0) -> torch.Tensor:
    """One shard's absorbed attention, as MLAAttention._absorbed with a slice of the latent:
    q_nope (B, H, T, n), q_rot (B, H, T, p), latent (B, 1, S, w), k_rot (B, 1, S, p),
    w_uk (H, n, w), w_uv (H, v, w) -> partial output (B, T, H, v). `nope_scale` multiplies the
    shard's no-RoPE logits (1: as the brief specifies; see the module docstring)."""
    batch, heads, length, _ = q_nope.shape
    q_lat = torch.einsum("bhtn,hnw->bhtw", q_nope, w_uk)  # (B, H, T, w)
    if nope_scale != 1.0:
        q_lat = q_lat * nope_scale
    rows = heads * length  # heads and queries on one axis against the single latent "head"
    scores = (q_lat.reshape(batch, rows, -1) @ latent[:, 0].transpose(-1, -2)
              + q_rot.reshape(batch, rows, -1) @ k_rot[:, 0].transpose(-1, -2))  # (B, H*T, S)
    scores = _masked(scores.view(batch, heads, length, -1).float() * scaling, attention_mask)
    probs = scores.softmax(dim=-1).to(latent.dtype)  # (B, H, T, S): this shard's own softmax
    out_lat = (probs.reshape(batch, rows, -1) @ latent[:, 0]).view(batch, heads, length, -1)  # (B, H, T, w)
    return torch.einsum("bhtw,hvw->bthv", out_lat, w_uv)  # (B, T, H, v)


class TPLAAttention(MLAAttention):
    """MLAAttention whose decode is TPLA's g-shard approximation (module docstring)."""

    def __init__(self, config, layer_idx: int, shards: int = 2, rank: int | None = None, group=None,
                 nope_scale: float = 1.0) -> None:
        super().__init__(config, layer_idx)
        if config.kv_lora_rank % shards:
            raise ValueError(f"{shards} shards: kv_lora_rank {config.kv_lora_rank} must divide evenly")
        if rank is not None and not 0 <= rank < shards:
            raise ValueError(f"rank {rank}: must be in 0..{shards - 1}")
        self.shards, self.rank, self.group = shards, rank, group
        self.nope_scale = nope_scale  # multiplies each shard's no-RoPE logits (module docstring)

    def shard_slice(self, j: int) -> slice:
        width = self.kv_lora_rank // self.shards
        return slice(j * width, (j + 1) * width)

    def _absorbed(self, q_nope, q_rot, latent, k_rot, attention_mask) -> torch.Tensor:
        """All g shards in one process (rank None): the sum of their partial outputs."""
        w_uk, w_uv = self._up_weights()  # (H, n, r), (H, v, r)
        out = 0
        for j in range(self.shards):
            part = self.shard_slice(j)
            out = out + shard_attention(q_nope, q_rot, latent[..., part], k_rot, w_uk[..., part],
                                        w_uv[..., part], self.scaling, attention_mask, self.nope_scale)
        return out  # (B, T, H, v)

    def forward(self, hidden_states, position_embeddings, attention_mask, past_key_values=None, **kwargs):
        if self.rank is None:
            return super().forward(hidden_states, position_embeddings, attention_mask, past_key_values, **kwargs)
        return self._rank_forward(hidden_states, position_embeddings, attention_mask, past_key_values, **kwargs)

    def _rank_forward(self, hidden_states, position_embeddings, attention_mask, past_key_values, **kwargs):
        """This rank's share: MLAAttention.forward's projections, then a sliced cache."""
        import torch.distributed as dist

        batch, length = hidden_states.shape[:-1]
        nope, rope, r = self.qk_nope_head_dim, self.qk_rope_head_dim, self.kv_lora_rank
        q = self.q_proj(hidden_states).view(batch, length, -1, nope + rope).transpose(1, 2)  # (B, H, T, n+p)
        q_nope, q_rot = q.split([nope, rope], dim=-1)
        latent, k_rot = self.kv_a_proj_with_mqa(hidden_states).split([r, rope], dim=-1)
        latent = self.kv_a_layernorm(latent).view(batch, 1, length, r)  # (B, 1, T, r) norm on the full latent
        k_rot = k_rot.view(batch, 1, length, rope)  # (B, 1, T, p)
        cos, sin = position_embeddings
        rotate = apply_rotary_pos_emb_interleave if self.config.rope_interleave else apply_rotary_pos_emb
        q_rot, k_rot = rotate(q_rot, k_rot, cos, sin)
        if past_key_values is None:
            raise ValueError("a TPLA rank keeps its latent slice in a cache: pass past_key_values")
        mine = latent[..., self.shard_slice(self.rank)].contiguous()  # (B, 1, T, r / g)
        if length > self.absorb_max_query:  # prefill: full MLA, the same on every rank
            if past_key_values.get_seq_length(self.layer_idx) > 0:
                raise ValueError("a TPLA rank prefills from an empty cache only (it holds one latent slice)")
            past_key_values.update(mine, k_rot, self.layer_idx)
            out = self._expanded(torch.cat([q_nope, q_rot], dim=-1), latent, k_rot, attention_mask, **kwargs)
            return self.o_proj(out.reshape(batch, length, -1)), None
        mine, k_rot = past_key_values.update(mine, k_rot, self.layer_idx)  # (B, 1, S, r / g)
        out = shard_attention(q_nope, q_rot, mine, k_rot, self.w_uk_shard, self.w_uv_shard,
                              self.scaling, attention_mask, self.nope_scale)  # (B, T, H, v)
        partial = self.o_proj(out.reshape(batch, length, -1))  # (B, T, D)
        dist.all_reduce(partial, group=self.group)  # the layer's one all-reduce
        return partial, None

    @torch.no_grad()
    def keep_shard_weights(self) -> None:
        """This rank's W_UK and W_UV columns as their own contiguous tensors (decode reads only them)."""
        w_uk, w_uv = self._up_weights()
        part = self.shard_slice(self.rank)
        self.register_buffer("w_uk_shard", w_uk[..., part].contiguous(), persistent=False)  # (H, n, r/g)
        self.register_buffer("w_uv_shard", w_uv[..., part].contiguous(), persistent=False)  # (H, v, r/g)


def install_tpla(model: nn.Module, shards: int = 2, rank: int | None = None, group=None,
                 nope_scale: float = 1.0) -> nn.Module:
    """`model` (an MLA DeepseekV3ForCausalLM, install_mla'd) with every attention replaced by
    TPLAAttention on the same weights: the one-process simulation (rank None) or rank `rank`."""
    for i, layer in enumerate(model.model.layers):
        old = layer.self_attn
        if not isinstance(old, MLAAttention):
            raise TypeError(f"layer {i}: {type(old).__name__}, not MLAAttention; run install_mla first")
        weight = old.q_proj.weight
        new = TPLAAttention(model.config, i, shards, rank, group, nope_scale).to(device=weight.device, dtype=weight.dtype)
        if isinstance(old.kv_a_layernorm, nn.Identity):
            new.kv_a_layernorm = nn.Identity()
        new.load_state_dict(old.state_dict(), strict=True)
        new.absorb_max_query = old.absorb_max_query
        new.train(old.training)
        if rank is not None:
            new.keep_shard_weights()
        layer.self_attn = new
    return model


def uninstall_tpla(model: nn.Module) -> nn.Module:
    """Back to plain MLAAttention (full MLA decode) on the same weights."""
    for i, layer in enumerate(model.model.layers):
        old = layer.self_attn
        if not isinstance(old, TPLAAttention):
            continue
        new = MLAAttention(model.config, i).to(device=old.q_proj.weight.device, dtype=old.q_proj.weight.dtype)
        if isinstance(old.kv_a_layernorm, nn.Identity):
            new.kv_a_layernorm = nn.Identity()
        new.load_state_dict(old.state_dict(), strict=True)
        new.absorb_max_query = old.absorb_max_query
        layer.self_attn = new
    return model
