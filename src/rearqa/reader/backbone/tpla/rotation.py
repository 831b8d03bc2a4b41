"""Orthogonal rotations of the MLA latent, folded into the weights before TPLA slices it.

TPLA (arXiv 2508.15881) rotates the latent space before splitting it, so that each shard sees a
representative part of the latent rather than, say, all of its high-energy directions. For an
orthogonal R (r, r) the rotated model caches c' = R c and reads it through W_UK R^T and W_UV R^T,
the same function (q_lat' . c' = (R W_UK^T q) . (R c) = q_lat . c), so the fold is exact on the
unsharded model; only the slicing that follows is an approximation.

The latent RMSNorm (config.latent_norm) sits between kv_a and the cache: norm(c) = gamma * c /
rms(c). Its gamma is folded into W_UK and W_UV first (their latent columns scaled by gamma, the
norm's weight set to ones), leaving a pure RMS scaling, which commutes with any orthogonal R
(rms(R c) = rms(c)); R then goes into kv_a's latent rows.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rearqa.reader.backbone.tpla.config import TPLAConfig
from rearqa.reader.backbone.transmla.convert import column_signs


def hadamard(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The normalised Sylvester Hadamard matrix (n, n), n a power of two: orthogonal and
    symmetric, every entry +-1/sqrt(n), so each rotated direction mixes all n equally."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard({n}): n must be a power of two")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / h.shape[0] ** 0.5


def pca_rotation(moment: Tensor, shards: int) -> Tensor:
    """R (r, r) from a latent second moment (r, r): its principal directions as rows, dealt
    round-robin to the shards (shard s gets components s, s + g, s + 2g, ... by falling
    energy), so every contiguous shard slice of R c holds a like share of each energy level."""
    r = moment.shape[0]
    _, vectors = torch.linalg.eigh(moment.double())  # ascending eigenvalues
    vectors = vectors.flip(1)  # (r, r) columns by falling energy
    vectors = vectors * column_signs(vectors)  # one sign per direction, whatever the machine
    order = torch.arange(r).view(r // shards, shards).T.reshape(-1)  # shard-major round robin
    return vectors[:, order].T.contiguous()


@torch.no_grad()
def latent_moments(model: nn.Module, calib: Tensor, batch_size: int = 8) -> list[Tensor]:
    """Per layer, the mean second moment (r, r) in float64 of the latent the cache would hold
    (after the latent norm), over the calibration token ids `calib` (n, T)."""
    layers = model.model.layers
    sums: list[Tensor | None] = [None] * len(layers)
    count = 0

    def hook(i):
        def on_latent(_m, _inp, out):
            c = out.reshape(-1, out.shape[-1]).double()  # (N, r)
            sums[i] = c.T @ c if sums[i] is None else sums[i] + c.T @ c
        return on_latent

    handles = [layer.self_attn.kv_a_layernorm.register_forward_hook(hook(i))
               for i, layer in enumerate(layers)]
    device = next(model.parameters()).device
    try:
        for start in range(0, calib.shape[0], batch_size):
            ids = calib[start:start + batch_size].to(device)  # (b, T)
            model.model(input_ids=ids, use_cache=False)
            count += ids.numel()
    finally:
        for h in handles:
            h.remove()
    return [s / count for s in sums]


@torch.no_grad()
def fold_latent_norm(model: nn.Module) -> nn.Module:
    """Every layer's latent-norm gamma moved into kv_b_proj's latent columns (exact); the norm
    keeps only its RMS scaling (weight ones). Layers without a latent norm are left alone."""
    for layer in model.model.layers:
        attn = layer.self_attn
        norm = attn.kv_a_layernorm
        if isinstance(norm, nn.Identity):
            continue
        gamma = norm.weight.double()  # (r,)
        w = attn.kv_b_proj.weight
        w.copy_((w.double() * gamma).to(w.dtype))  # (H * (n + v), r): columns scaled
        norm.weight.fill_(1.0)
    return model


@torch.no_grad()
def fold_rotation(model: nn.Module, rotations: Tensor | list[Tensor]) -> nn.Module:
    """`model` (MLA) with each layer's latent rotated by its R (r, r) (one R for all layers, or a
    list): c' = R c cached, W_UK and W_UV read it through R^T. Exact for the unsharded model."""
    layers = model.model.layers
    if isinstance(rotations, Tensor):
        rotations = [rotations] * len(layers)
    if len(rotations) != len(layers):
        raise ValueError(f"{len(rotations)} rotations for {len(layers)} layers")
    fold_latent_norm(model)
    for layer, rot in zip(layers, rotations):
        attn = layer.self_attn
        r = attn.kv_lora_rank
        rot = rot.double()
        if rot.shape != (r, r):
            raise ValueError(f"rotation of shape {tuple(rot.shape)}: kv_lora_rank is {r}, need ({r}, {r})")
        a = attn.kv_a_proj_with_mqa.weight  # (r + rope, D): [latent rows; rotary key rows]
        a[:r] = (rot @ a[:r].double()).to(a.dtype)
        b = attn.kv_b_proj.weight  # (H * (n + v), r)
        b.copy_((b.double() @ rot.T).to(b.dtype))
    return model


def build_rotations(model: nn.Module, cfg: TPLAConfig, calib: Tensor | None = None) -> list[Tensor] | None:
    """The per-layer rotations `cfg.rotation` asks for (None for 'none'); 'pca' needs `calib`
    token ids and must see the model with its latent-norm gamma already folded."""
    cfg.check_model(model.config)
    r = model.config.kv_lora_rank
    if cfg.rotation == "none":
        return None
    if cfg.rotation == "hadamard":
        return [hadamard(r)] * len(model.model.layers)
    if calib is None:
        raise ValueError("rotation 'pca' needs calibration token ids (calib)")
    return [pca_rotation(m, cfg.shards) for m in latent_moments(model, calib)]


def rotate_for_tpla(model: nn.Module, cfg: TPLAConfig, calib: Tensor | None = None) -> nn.Module:
    """Fold the latent norm's gamma, then the rotation `cfg` names, into `model` (in place).
    Rotation 'none' leaves the weights as they are (no rotation to commute with the norm), so one
    shard without a rotation is full MLA bit for bit."""
    if cfg.rotation == "none":
        cfg.check_model(model.config)
        return model
    fold_latent_norm(model)
    rotations = build_rotations(model, cfg, calib)
    return model if rotations is None else fold_rotation(model, rotations)
