"""TransMLA weight surgery: a Llama-style GQA reader to a DeepSeek-V3 (MLA) one.

Meng et al., "TransMLA" (NeurIPS 2025); efficiency-methods.md section 1. Each step below is a
function on one layer's weights in the *latent view* (`LayerWeights`): the keys of all KV heads
stacked into one latent y = W_k x of n_kv * head_dim, read by each query head through an
up-projection k_up[h] (and the same for values). Every step rewrites the weights and the
calibration second moment of [key latent; value latent] together, so the next step fits to the
statistics of the model as it now is:
  (a) replicate_kv   k_up / v_up are block selectors                           exact
  (b) rorope         per frequency group, a PCA rotation of the key latent;    exact with freqfold 1
                     its leading rope_dim dims keep RoPE, the rest drop it     (the drop is lossy)
  (c) balance_kv     K_nope scaled against V so K does not dominate the PCA    exact
  (d) joint_pca      [K_nope; V] projected on its top kv_lora_rank directions  exact at the cap
The statistics come from one pass of the original model over the calibration text (TransMLA
calibrates again after (b); here every later step is a linear map of the same k/v outputs, so
their moments follow from the first pass, fitted to the original model's hidden states).

Layout of the rotated key latent: pair p at dims (2p, 2p+1) (DeepSeek's interleaved RoPE), the
rope_dim/2 RoPE pairs first, pair j on frequency j * collapse of the original head, which is
frequency j of a rope_dim-wide head with the same theta.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from rearqa.reader.backbone.transmla.calibration import CalibrationRecord
from rearqa.reader.backbone.transmla.config import ModelShape, TransMLAConfig

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class LayerWeights:
    """One layer's attention in the latent view, float64 (L = n_kv * head_dim)."""

    wq: Tensor  # (H * d, D) query rows, per head
    wk: Tensor  # (L, D) key latent rows
    wv: Tensor  # (L, D) value latent rows
    k_up: Tensor  # (H, d, L) key latent -> head h's key
    v_up: Tensor  # (H, d, L) value latent -> head h's value
    cov: Tensor  # (2L, 2L) mean over calibration tokens of [y_k; y_v][y_k; y_v]^T
    pairs: Tensor  # (L / 2, 2) the (real, imaginary) dims of each rotary pair of the key latent
    pair_freq: Tensor  # (L / 2,) each pair's frequency index in the original head
    rope_dim: int = 0  # leading key-latent dims that keep RoPE after (b); 0 before it


# ------------------------------------------------------------------------------ statistics

@torch.no_grad()
def collect_kv_moments(model: nn.Module, calib: Tensor, batch_size: int = 8,
                       progress: Progress | None = None) -> list[Tensor]:
    """Per layer, the mean second moment (2L, 2L) of [k_proj; v_proj] outputs (pre-RoPE keys),
    float64, from forward hooks over the calibration batches (equal lengths: no padding)."""
    layers = model.model.layers
    sums = [None] * len(layers)
    keys: dict[int, Tensor] = {}
    count = 0

    def on_k(i):
        return lambda _m, _inp, out: keys.__setitem__(i, out)

    def on_v(i):
        def hook(_m, _inp, out):
            kv = torch.cat([keys.pop(i), out], dim=-1)  # (b, T, 2L)
            kv = kv.reshape(-1, kv.shape[-1]).double()  # (N, 2L)
            sums[i] = kv.T @ kv if sums[i] is None else sums[i] + kv.T @ kv
        return hook

    handles = [h for i, layer in enumerate(layers)
               for h in (layer.self_attn.k_proj.register_forward_hook(on_k(i)),
                         layer.self_attn.v_proj.register_forward_hook(on_v(i)))]
    device = next(model.parameters()).device
    try:
        for start in range(0, calib.shape[0], batch_size):
            ids = calib[start:start + batch_size].to(device)  # (b, T)
            model.model(input_ids=ids, use_cache=False)  # the decoder only: no logits needed
            count += ids.numel()
            if progress:
                progress("calibration", min(start + batch_size, calib.shape[0]), calib.shape[0])
    finally:
        for h in handles:
            h.remove()
    return [s.cpu() / count for s in sums]


def column_signs(vectors: Tensor) -> Tensor:
    """+1 / -1 per column of `vectors`: the sign of the column's entry of largest magnitude.
    Eigen- and singular vectors are defined up to sign, and LAPACK picks it by thread count and
    build; multiplying each column by its sign fixes one choice, so a conversion made on another
    machine is the same weights, not a sign-flipped equivalent (a LoRA trained over it stays valid)."""
    peak = vectors.abs().argmax(dim=0, keepdim=True)
    signs = torch.sign(vectors.gather(0, peak)).squeeze(0)
    return torch.where(signs == 0, torch.ones_like(signs), signs)


def _pca(cov: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """(eigenvalues descending, eigenvectors as columns, signs canonical: column_signs) of
    cov + damping * mean eigenvalue."""
    n = cov.shape[0]
    damped = cov + damping * torch.trace(cov) / n * torch.eye(n, dtype=cov.dtype)
    values, vectors = torch.linalg.eigh(damped)
    vectors = vectors.flip(1)
    return values.flip(0), vectors * column_signs(vectors)


# ------------------------------------------------------------------------------ the steps

def replicate_kv(wq: Tensor, wk: Tensor, wv: Tensor, cov: Tensor,
                 shape: ModelShape) -> LayerWeights:
    """(a) Each query head reads its KV head's block of the latent: k_up, v_up block selectors."""
    d, latent, group = shape.head_dim, shape.latent, shape.heads // shape.kv_heads
    up = torch.zeros(shape.heads, d, latent, dtype=torch.float64)
    for h in range(shape.heads):
        kv = h // group
        up[h, :, kv * d:(kv + 1) * d] = torch.eye(d, dtype=torch.float64)
    half = torch.arange(d // 2)
    # Llama's rotate_half layout: pair i of a head is dims (i, i + d/2)
    real = (torch.arange(shape.kv_heads)[:, None] * d + half).reshape(-1)  # (L/2,) kv-head major
    wq, wk, wv = (t.detach().cpu().double() for t in (wq, wk, wv))
    return LayerWeights(wq, wk, wv, up, up.clone(), cov.cpu().double(),
                        torch.stack([real, real + d // 2], dim=1), half.repeat(shape.kv_heads))


def rorope(w: LayerWeights, shape: ModelShape, rope_dim: int, freqfold: int,
           damping: float) -> tuple[LayerWeights, float]:
    """(b) RoRoPE. For each group of `freqfold` neighbouring frequencies, the key coordinates of
    all KV heads at those frequencies are pooled (real and imaginary halves stacked as samples)
    and rotated onto their principal directions, the same rotation on both halves; with one
    frequency per group the rotation commutes with RoPE. The top freqfold / collapse directions
    of each group keep RoPE, on frequencies [::collapse]. Returns the weights and the share of
    the key energy that lands in the RoPE dims."""
    d, latent = shape.head_dim, shape.latent
    collapse, half = d // rope_dim, d // 2
    keep = freqfold // collapse  # RoPE pairs per group
    cov_k = w.cov[:latent, :latent]
    rope_rows, nope_rows, nope_freq = [], [], []  # each entry: a pair's (2, L) rotation rows
    for g in range(half // freqfold):
        freqs = torch.arange(g * freqfold, (g + 1) * freqfold)
        index = (torch.arange(shape.kv_heads)[:, None] * half + freqs).reshape(-1)  # (n_kv * f,)
        real, imag = w.pairs[index, 0], w.pairs[index, 1]  # their dims in the original latent
        pooled = cov_k[real][:, real] + cov_k[imag][:, imag]  # (n_kv * f, n_kv * f)
        _, vectors = _pca(pooled, damping)
        for m in range(vectors.shape[1]):
            rows = torch.zeros(2, latent, dtype=torch.float64)  # (real row, imaginary row)
            rows[0][real], rows[1][imag] = vectors[:, m], vectors[:, m]
            (rope_rows if m < keep else nope_rows).append(rows)
            if m >= keep:  # the frequency it would have under RoPE (reference_logits only)
                nope_freq.append(g * freqfold + (m % keep) * collapse)
    rope_freq = torch.arange(len(rope_rows)) * collapse  # pair j of the DeepSeek rope head
    rot = torch.stack([r for pair in rope_rows + nope_rows for r in pair])  # (L, L): z = rot @ y
    lift = torch.block_diag(rot, torch.eye(latent, dtype=torch.float64))  # (2L, 2L) on [y_k; y_v]
    cov = lift @ w.cov @ lift.T
    energy = (torch.trace(cov[:rope_dim, :rope_dim]) / torch.trace(cov[:latent, :latent])).item()
    p = torch.arange(latent // 2)
    return replace(w, wk=rot @ w.wk, k_up=w.k_up @ rot.T, cov=cov,
                   pairs=torch.stack([2 * p, 2 * p + 1], dim=1),
                   pair_freq=torch.cat([rope_freq, torch.tensor(nope_freq, dtype=torch.long)]),
                   rope_dim=rope_dim), energy


def balance_kv(w: LayerWeights, shape: ModelShape) -> tuple[LayerWeights, float]:
    """(c) ratio = mean per-dim L2 norm of K_nope / the same for V; K_nope rows divided by it and
    k_up's nope columns multiplied by it (exact), so the joint PCA weighs K and V alike."""
    latent, r0 = shape.latent, w.rope_dim
    norms = w.cov.diagonal().clamp_min(0).sqrt()  # per-dim RMS over tokens (2L,)
    ratio = (norms[r0:latent].mean() / norms[latent:].mean()).item()
    scale = torch.ones(2 * latent, dtype=torch.float64)
    scale[r0:latent] = 1 / ratio
    k_up = w.k_up.clone()
    k_up[:, :, r0:] *= ratio
    return replace(w, wk=w.wk * scale[:latent, None], k_up=k_up,
                   cov=w.cov * scale[:, None] * scale[None, :]), ratio


def joint_pca(w: LayerWeights, shape: ModelShape, rank: int | None,
              damping: float) -> tuple[Tensor, float]:
    """(d) The top `rank` principal directions R (cap, rank) of [K_nope; V] and the share of its
    energy they keep; rank None gives the identity: the partial-RoPE model, no compression."""
    cov = w.cov[w.rope_dim:, w.rope_dim:]  # (cap, cap)
    if rank is None:
        return torch.eye(cov.shape[0], dtype=torch.float64), 1.0
    _, vectors = _pca(cov, damping)
    basis = vectors[:, :rank]
    return basis, (torch.trace(basis.T @ cov @ basis) / torch.trace(cov)).item()


def mla_weights(w: LayerWeights, shape: ModelShape, basis: Tensor) -> dict[str, Tensor]:
    """DeepSeek-V3 attention weights from the latent view and the PCA basis (cap, r): per head
    q = [q_nope; q_rope], kv_a = [latent; rope key], kv_b per head [k_nope; v]. The query is
    multiplied by sqrt((d + rope) / d), undoing DeepSeek's wider softmax scale (exact)."""
    heads, d, latent, r0 = shape.heads, shape.head_dim, shape.latent, w.rope_dim
    nope = latent - r0
    wq = w.wq.view(heads, d, -1) * math.sqrt((d + r0) / d)  # (H, d, D)
    q_rope = w.k_up[:, :, :r0].transpose(1, 2) @ wq  # (H, rope, D): q_rope[h] = k_up_rope[h]^T W_q[h]
    k_b = w.k_up[:, :, r0:] @ basis[:nope]  # (H, d, r)
    v_b = w.v_up @ basis[nope:]  # (H, d, r)
    return {"q_proj": torch.cat([wq, q_rope], dim=1).reshape(heads * (d + r0), -1),
            "kv_a_proj_with_mqa": torch.cat([basis.T @ torch.cat([w.wk[r0:], w.wv]), w.wk[:r0]]),
            "kv_b_proj": torch.cat([k_b, v_b], dim=1).reshape(heads * 2 * d, -1)}


def latent_rms(w: LayerWeights, basis: Tensor) -> float:
    """Root mean square of the latent c = R^T [K_nope; V] over calibration tokens and dims."""
    cov = w.cov[w.rope_dim:, w.rope_dim:]
    return math.sqrt(torch.trace(basis.T @ cov @ basis).item() / basis.shape[1])


def reference_logits(w: LayerWeights, x: Tensor, positions: Tensor, rope_theta: float,
                     head_dim: int, rope_all: bool = True) -> Tensor:
    """(H, T, T) unscaled attention logits of the latent view (no V, no PCA). With `rope_all`,
    RoPE acts on *every* key-latent pair at its `pair_freq`: a check that (a)-(c) keep the
    function before any dim drops RoPE; without it, on the leading rope_dim only: the
    partial-RoPE model, which the DeepSeek layout must reproduce."""
    pairs = w.pairs if rope_all else w.pairs[:w.rope_dim // 2]  # (P, 2)
    inv_freq = rope_theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle = positions.double()[:, None] * inv_freq[w.pair_freq[:len(pairs)]]  # (T, P)
    cos, sin = angle.cos(), angle.sin()

    def rotate(v):  # (..., T, L)
        re, im = v[..., pairs[:, 0]], v[..., pairs[:, 1]]
        out = v.clone()
        out[..., pairs[:, 0]], out[..., pairs[:, 1]] = re * cos - im * sin, im * cos + re * sin
        return out

    heads = w.k_up.shape[0]
    q = (x.double() @ w.wq.T).view(-1, heads, head_dim).transpose(0, 1)  # (H, T, d)
    q_lat = rotate(q @ w.k_up)  # (H, T, L)
    y = rotate(x.double() @ w.wk.T)  # (T, L)
    return q_lat @ y.T


# ------------------------------------------------------------------------------ the model

def deepseek_config(config, shape: ModelShape, rank: int, rope_dim: int, nope_dim: int | None = None):
    """The DeepseekV3Config of a reader converted from the Llama-style `config`: dense MLP, MHA
    over the latent, untied. `nope_dim` is the key width without RoPE per head (TransMLA: the
    whole head, its default; X-EcoMLA: head_dim - rope_dim)."""
    from transformers import DeepseekV3Config

    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope['rope_type']!r}: MLA conversion here takes plain RoPE only")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ValueError("attention or MLP biases: vLLM's DeepSeek model has none")
    return DeepseekV3Config(
        vocab_size=config.vocab_size, hidden_size=shape.hidden,
        intermediate_size=config.intermediate_size, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
        first_k_dense_replace=shape.layers, q_lora_rank=None, kv_lora_rank=rank,
        qk_nope_head_dim=shape.head_dim if nope_dim is None else nope_dim, v_head_dim=shape.head_dim, qk_rope_head_dim=rope_dim,
        rope_interleave=True, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": rope["rope_theta"]},
        tie_word_embeddings=False, attention_bias=False, pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id)


def convert(model: nn.Module, calib: Tensor, cfg: TransMLAConfig, progress: Progress | None = None,
            record: CalibrationRecord | None = None, compress: bool = True,
            moments: list[Tensor] | None = None) -> tuple[nn.Module, dict]:
    """(DeepseekV3ForCausalLM, report). `compress=False` stops before (d): the partial-RoPE
    model in the same layout (latent = [K_nope; V], kv_lora_rank = cap), TransMLA's middle point.
    Without latent_norm the kv_a_layernorm is an nn.Identity (the weights have no such norm).
    `moments` (collect_kv_moments of `calib`) lets a sweep of settings share one calibration pass.
    """
    from transformers import DeepseekV3ForCausalLM

    shape = cfg.check_model(model.config)
    rank = cfg.kv_lora_rank if compress else shape.rank_cap(cfg.rope_dim)
    if moments is None:
        moments = collect_kv_moments(model, calib, progress=progress)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    config = deepseek_config(model.config, shape, rank, cfg.rope_dim)
    config.latent_norm = cfg.latent_norm  # saved in config.json; MLAAttention and load_mla read it
    out = DeepseekV3ForCausalLM(config)
    out = out.to(dtype=dtype, device=device).eval()
    rows = []
    for i, (src, dst) in enumerate(zip(model.model.layers, out.model.layers)):
        attn = src.self_attn
        w = replicate_kv(attn.q_proj.weight.detach(), attn.k_proj.weight.detach(),
                         attn.v_proj.weight.detach(), moments[i], shape)
        w, rope_energy = rorope(w, shape, cfg.rope_dim, cfg.freqfold, cfg.damping)
        ratio = 1.0
        if cfg.balance_kv:
            w, ratio = balance_kv(w, shape)
        basis, energy = joint_pca(w, shape, rank if compress else None, cfg.damping)
        weights = mla_weights(w, shape, basis)
        weights["o_proj"] = attn.o_proj.weight.detach()
        with torch.no_grad():
            for name, value in weights.items():
                getattr(dst.self_attn, name).weight.copy_(value.to(dtype))
            rms = latent_rms(w, basis)
            if cfg.latent_norm:
                # A constant weight equal to the calibration RMS of the latent (the root of its
                # mean square, which the second moment holds), so norm(c) ~ c in scale. It is
                # not an identity: each token's latent is rescaled to that RMS.
                dst.self_attn.kv_a_layernorm.weight.fill_(rms)
            else:
                dst.self_attn.kv_a_layernorm = nn.Identity()
        rows.append({"layer": i, "pca_energy": energy, "rope_energy": rope_energy,
                     "kv_ratio": ratio, "latent_rms": rms})
        if progress:
            progress("layers", i + 1, shape.layers)
    copy_unchanged(model, out)
    record = record or CalibrationRecord.of(calib, "in-memory", cfg.seed)
    return out, {"kv_lora_rank": rank, "rope_dim": cfg.rope_dim, "freqfold": cfg.freqfold,
                 "compressed": compress, "calibration": record.to_dict(), "layers": rows}


@torch.no_grad()
def copy_unchanged(src: nn.Module, out: nn.Module) -> None:
    """Copy what an attention conversion leaves alone from the Llama `src` to the DeepseekV3
    `out`: embeddings, every layer's norms and MLP, the final norm and an untied lm_head (vLLM's
    DeepSeek model ties nothing). X-EcoMLA's conversion shares it."""
    for src_layer, dst_layer in zip(src.model.layers, out.model.layers):
        for name in ("input_layernorm", "post_attention_layernorm"):
            getattr(dst_layer, name).weight.copy_(getattr(src_layer, name).weight)
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(dst_layer.mlp, name).weight.copy_(getattr(src_layer.mlp, name).weight)
    out.model.embed_tokens.weight.copy_(src.model.embed_tokens.weight)
    out.model.norm.weight.copy_(src.model.norm.weight)
    out.lm_head.weight.copy_(src.lm_head.weight)
