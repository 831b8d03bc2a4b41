"""X-EcoMLA weight surgery: a Llama-style GQA reader to a DeepSeek-V3 (MLA) one, from an SVD of
its attention weights alone (no calibration text).

Per layer, float64 (H query heads, n_kv KV heads of d, hidden D):
  rope    each head's key keeps RoPE on `rope_dim` of its d dims: the rotary pairs at frequencies
          [::d / rope_dim] of the head, so that DeepSeek's rope head of width rope_dim (same theta)
          turns pair j at exactly the frequency the Llama head turned it. In Llama's rotate_half
          layout pair i is dims (i, i + d/2); DeepSeek's rope head is interleaved (pair j at dims
          (2j, 2j + 1), `rope_interleave`), so the rows are laid out (re_0, im_0, re_1, im_1, ...).
          The reference takes "the last rope_dim rows" of each head in its own interleaved layout;
          in Llama's layout those would be half-pairs, so the frequency-matched pairs are taken
          instead (as TransMLA does with its rotated pairs).
          The shared rotary key is the mean over heads of these rows of W_K (as the reference
          does; exact only with one KV head); each query head keeps its own rows as q_rope.
  query   full rank: per head [q_nope (d - rope_dim); q_rope (rope_dim)] rows of W_q, no q_lora.
          The reference also factors W_q through a q_lora SVD (rank 400 for SmolLM); that saves
          parameters, not cache, and vLLM/our export keep a full q_proj, so it is left out here.
  latent  [W_K; W_V] with each KV head repeated to its query heads (2 H d, D) = U S V^T:
          kv_a = S V^T[:r], kv_b = U[:, :r] with each head's key rows cut to its nope dims. At the
          cap rank min(2 n_kv d, D) it reproduces [K_nope; V] exactly; below, r is each layer's
          smallest keeping `energy` of sum(sigma^2), rounded up to `rank_multiple`, or fixed.
Attention scores stay exact in scale: DeepSeek's softmax scale (nope + rope)^-0.5 = d^-0.5.
What is lost without training: RoPE on the nope dims, the per-head rotary keys (averaged) and the
latent's tail; the paper recovers it by distillation, which this package does not run here.

DeepseekV3Config has one kv_lora_rank, so per-layer ranks are zero-padded to the largest (zero
kv_a rows, zero kv_b columns: exact without the latent norm) and the cache is that wide.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rearqa.reader.backbone.transmla.config import ModelShape
from rearqa.reader.backbone.transmla.convert import column_signs, copy_unchanged, deepseek_config
from rearqa.reader.backbone.xecomla.config import XEcoMLAConfig, energy_rank, rank_cap


def rope_rows(head_dim: int, rope_dim: int) -> Tensor:
    """(rope_dim,) the head dims that keep RoPE, in DeepSeek's interleaved order: pair j is
    Llama's pair i = j * head_dim / rope_dim, dims (i, i + head_dim / 2)."""
    freqs = torch.arange(rope_dim // 2) * (head_dim // rope_dim)
    return torch.stack([freqs, freqs + head_dim // 2], dim=1).reshape(-1)


def nope_rows(head_dim: int, rope_dim: int) -> Tensor:
    """(head_dim - rope_dim,) the head dims that drop RoPE, in their order in the head."""
    keep = torch.ones(head_dim, dtype=torch.bool)
    keep[rope_rows(head_dim, rope_dim)] = False
    return keep.nonzero().squeeze(1)


def repeated_kv(wk: Tensor, wv: Tensor, shape: ModelShape) -> Tensor:
    """(2 H d, D) [W_K; W_V] with each KV head's rows repeated for its query heads, float64."""
    group = shape.heads // shape.kv_heads

    def repeat(w):  # (n_kv * d, D) -> (H * d, D)
        return w.double().view(shape.kv_heads, shape.head_dim, -1).repeat_interleave(group, 0) \
            .reshape(shape.heads * shape.head_dim, -1)
    return torch.cat([repeat(wk), repeat(wv)])


def repeated_kv_svd(wk: Tensor, wv: Tensor, shape: ModelShape) -> tuple[Tensor, Tensor, Tensor]:
    """The thin SVD (U, S, V^T) of repeated_kv(wk, wv), float64, from the SVD of the unrepeated
    (2 n_kv d, D) stack [W_K; W_V] = U0 S0 V^T: repeating each KV head's rows G = H / n_kv times
    is P [W_K; W_V] with P^T P = G I, so U = P U0 / sqrt(G) and S = sqrt(G) S0 (same directions,
    same energy shares; an SVD a G-th the height). Signs are canonical (column_signs of U0, the
    matching rows of V^T flipped with them), so the result does not depend on the machine."""
    u0, s0, vh = torch.linalg.svd(torch.cat([wk, wv]).double(), full_matrices=False)
    signs = column_signs(u0)
    u0, vh = u0 * signs, vh * signs[:, None]
    group = shape.heads // shape.kv_heads
    u = u0.view(2, shape.kv_heads, shape.head_dim, -1).repeat_interleave(group, 1) \
        .reshape(2 * shape.heads * shape.head_dim, -1)
    return u / math.sqrt(group), s0 * math.sqrt(group), vh


def cumulative_energy(sigma: Tensor) -> Tensor:
    """Share of sum(sigma^2) the leading r singular values hold, for r = 1..len(sigma)."""
    power = sigma.double() ** 2
    return power.cumsum(0) / power.sum()


def layer_weights(wq: Tensor, wk: Tensor, wv: Tensor, shape: ModelShape, rope_dim: int,
                  rank: int, svd: tuple[Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
    """One layer's DeepSeek-V3 attention weights at latent width `rank`, float64; `svd` is
    repeated_kv_svd(wk, wv)."""
    heads, d = shape.heads, shape.head_dim
    rope, nope = rope_rows(d, rope_dim), nope_rows(d, rope_dim)
    q = wq.double().view(heads, d, -1)  # (H, d, D)
    u, sigma, vh = svd
    k_rope = wk.double().view(shape.kv_heads, d, -1)[:, rope].mean(0)  # (rope, D), mean over heads
    up = u[:, :rank].view(2, heads, d, rank)  # ([K; V], H, d, r)
    return {"q_proj": torch.cat([q[:, nope], q[:, rope]], dim=1).reshape(heads * d, -1),
            "kv_a_proj_with_mqa": torch.cat([sigma[:rank, None] * vh[:rank], k_rope]),
            "kv_b_proj": torch.cat([up[0][:, nope], up[1]], dim=1).reshape(heads * (2 * d - rope_dim), rank)}


def pad_latent(weights: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    """`weights` with the latent widened to `width`: zero kv_a rows between the latent and the
    rotary key, zero kv_b columns (exact: the extra latent dims are zero and read by nothing)."""
    kv_a, kv_b = weights["kv_a_proj_with_mqa"], weights["kv_b_proj"]
    rank = kv_b.shape[1]
    if width < rank:
        raise ValueError(f"pad to {width}: the latent is already {rank} wide")
    latent, key = kv_a[:rank], kv_a[rank:]
    return {**weights,
            "kv_a_proj_with_mqa": torch.cat([latent, kv_a.new_zeros(width - rank, kv_a.shape[1]), key]),
            "kv_b_proj": torch.cat([kv_b, kv_b.new_zeros(kv_b.shape[0], width - rank)], dim=1)}


def latent_norm_weight(kv_a_latent: Tensor, input_norm: Tensor, width: int) -> float:
    """A weight-only start for the latent RMSNorm: the latent's RMS if the normalised hidden state
    had unit variance in every dim, sqrt(||A diag(g)||_F^2 / r), times sqrt(r / width) so a latent
    zero-padded to `width` (which lowers its mean square by r / width) is scaled as unpadded."""
    rank = kv_a_latent.shape[0]
    rms = (kv_a_latent * input_norm.double()).square().sum().div(rank).sqrt().item()
    return rms * math.sqrt(rank / width)


@torch.no_grad()
def convert(model: nn.Module, cfg: XEcoMLAConfig) -> tuple[nn.Module, dict]:
    """(DeepseekV3ForCausalLM, report): `model` upcycled to MLA (module docstring). Without
    latent_norm the kv_a_layernorm is an nn.Identity (the weights have no such norm)."""
    from transformers import DeepseekV3ForCausalLM

    shape = cfg.check_model(model.config)
    cap = rank_cap(shape)
    layers = []
    for src in model.model.layers:
        attn = src.self_attn
        svd = repeated_kv_svd(attn.k_proj.weight.cpu(), attn.v_proj.weight.cpu(), shape)
        shares = cumulative_energy(svd[1])
        rank = cfg.kv_lora_rank or energy_rank(shares.tolist(), cfg.energy, cfg.rank_multiple, cap)
        layers.append((svd, rank, shares[min(rank, len(shares)) - 1].item()))
    width = max(rank for _, rank, _ in layers)
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    config = deepseek_config(model.config, shape, width, cfg.rope_dim,
                             nope_dim=shape.head_dim - cfg.rope_dim)
    config.latent_norm = cfg.latent_norm  # saved in config.json; MLAAttention and load_mla read it
    out = DeepseekV3ForCausalLM(config).to(dtype=dtype, device=device).eval()
    rows = []
    for i, (src, dst, (svd, rank, energy)) in enumerate(zip(model.model.layers, out.model.layers, layers)):
        attn = src.self_attn
        weights = layer_weights(attn.q_proj.weight.cpu(), attn.k_proj.weight.cpu(),
                                attn.v_proj.weight.cpu(), shape, cfg.rope_dim, rank, svd)
        weights = pad_latent(weights, width)
        weights["o_proj"] = attn.o_proj.weight
        for name, value in weights.items():
            getattr(dst.self_attn, name).weight.copy_(value.to(dtype))
        if cfg.latent_norm:
            latent = weights["kv_a_proj_with_mqa"][:rank]
            dst.self_attn.kv_a_layernorm.weight.fill_(
                latent_norm_weight(latent, src.input_layernorm.weight.cpu(), width))
        else:
            dst.self_attn.kv_a_layernorm = nn.Identity()
        rows.append({"layer": i, "kv_lora_rank": rank, "svd_energy": energy,
                     "rope_key_loss": rope_key_loss(attn.k_proj.weight.cpu(), shape, cfg.rope_dim)})
    copy_unchanged(model, out)
    ranks = [row["kv_lora_rank"] for row in rows]
    return out, {"kv_lora_rank": width, "rope_dim": cfg.rope_dim, "rank_cap": cap,
                 "rank_rule": "fixed" if cfg.kv_lora_rank else f"energy {cfg.energy}",
                 "layer_ranks": ranks, "padded_to_layer_max": len(set(ranks)) > 1,
                 "latent_values_per_token": shape.layers * (width + cfg.rope_dim),
                 "latent_values_per_token_unpadded": sum(ranks) + shape.layers * cfg.rope_dim,
                 "layers": rows}


def rope_key_loss(wk: Tensor, shape: ModelShape, rope_dim: int) -> float:
    """Share of the rope rows' squared norm (over KV heads) that the mean over heads loses:
    0 with one KV head, near 1 - 1/n_kv for unrelated heads."""
    rows = wk.double().view(shape.kv_heads, shape.head_dim, -1)[:, rope_rows(shape.head_dim, rope_dim)]
    return ((rows - rows.mean(0)).square().sum() / rows.square().sum()).item()
