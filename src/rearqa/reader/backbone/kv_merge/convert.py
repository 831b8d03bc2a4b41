"""KV-head merging weight surgery (module docstring of the package for the idea).

Per layer, float64 (H query heads, n KV heads of d, merged into m heads of s = n / m old heads;
G' = H / m query heads per new head). Old KV head g goes to new head g // s as its member g % s,
and query head h, which read old head h // (H / n), reads new head h // G' = (h // (H / n)) // s.
Llama's rotate_half layout: rotary pair i of a head is dims (i, i + d / 2), frequency i.
  keys    per new head and frequency i, z_i in C^s (member l: k_l[i] + 1j k_l[i + d/2]);
          C_i = E[z_i z_i^H] from the real calibration moments; u_i its top eigenvector (phase
          canonical: largest entry real positive). Merged key pair i = u_i^H z_i; query head h
          multiplies its pair i by conj(u_i[l(h)]). Both are complex scalars per pair: RoPE's
          rotation of each pair commutes with them (rotate-then-merge == merge-then-rotate).
  values  per new head, the top d eigenvectors U (s d, d) of E[[v_1..v_s][v_1..v_s]^T]; merged
          value = U^T [v]; o_proj's columns of head h are multiplied by U's block of member l(h).
Scores and outputs are exact wherever the dropped components are zero in the calibration data.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rearqa.reader.backbone.kv_merge.config import KVMergeConfig
from rearqa.reader.backbone.transmla.calibration import CalibrationRecord
from rearqa.reader.backbone.transmla.config import ModelShape
from rearqa.reader.backbone.transmla.convert import column_signs, collect_kv_moments


def key_covariance(cov_k: Tensor, members: Tensor, head_dim: int) -> Tensor:
    """(d/2, s, s) complex128: per frequency, the Hermitian second moment E[z z^H] of the members'
    rotary pairs z (k[i] + 1j k[i + d/2]), from the real key moment `cov_k` (n d, n d)."""
    half = head_dim // 2
    re = members[None, :] * head_dim + torch.arange(half)[:, None]  # (F, s) dims of the real parts
    im = re + half

    def block(a, b):  # (F, s, s): E[a_l b_l'] at each frequency
        return cov_k[a[:, :, None], b[:, None, :]]
    return torch.complex(block(re, re) + block(im, im), block(im, re) - block(re, im))


def top_complex_directions(cov: Tensor) -> tuple[Tensor, float]:
    """(u (F, s) complex, share of the key energy, all frequencies, u keeps): the top eigenvector per
    frequency, its phase fixed so its largest-magnitude entry is real and positive (eigenvectors
    are defined up to a phase; this makes a conversion the same weights on every machine)."""
    values, vectors = torch.linalg.eigh(cov)  # ascending
    u = vectors[..., -1]  # (F, s)
    peak = u.gather(1, u.abs().argmax(dim=1, keepdim=True))  # (F, 1)
    u = u * (peak.conj() / peak.abs().clamp_min(1e-300))
    return u, (values[..., -1].sum() / values.sum().clamp_min(1e-300)).item()


def times_conj(x: Tensor, y: Tensor, coeff: Tensor) -> tuple[Tensor, Tensor]:
    """(real, imaginary) of conj(coeff) * (x + 1j y), on real tensors; `coeff` broadcasts."""
    a, b = coeff.real, coeff.imag
    return a * x + b * y, a * y - b * x


def merge_keys(keys: Tensor, u: Tensor) -> Tensor:
    """(..., d) the merged key u^H z per frequency, from the members' keys (s, ..., d) and u (F, s).
    Works on weight rows and on key states before or after RoPE alike (it commutes with RoPE)."""
    half = keys.shape[-1] // 2
    coeff = u.T.reshape(u.shape[1], *([1] * (keys.dim() - 2)), half).to(torch.complex128)  # (s, 1.., F)
    re, im = times_conj(keys[..., :half].double(), keys[..., half:].double(), coeff)
    return torch.cat([re.sum(0), im.sum(0)], dim=-1)


def scale_query(q: Tensor, coeff: Tensor) -> Tensor:
    """(..., d) the query with each pair i multiplied by conj(coeff[i]) (coeff (F,) complex)."""
    half = q.shape[-1] // 2
    re, im = times_conj(q[..., :half].double(), q[..., half:].double(), coeff.to(torch.complex128))
    return torch.cat([re, im], dim=-1)


def value_basis(cov_v: Tensor, head_dim: int) -> tuple[Tensor, float]:
    """(U (s d, d), share of the energy kept): top head_dim principal directions, signs canonical."""
    values, vectors = torch.linalg.eigh(cov_v)
    vectors, values = vectors.flip(1)[:, :head_dim], values.flip(0)
    vectors = vectors * column_signs(vectors)
    return vectors, (values[:head_dim].sum() / values.sum().clamp_min(1e-300)).item()


def merge_layer(wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, cov: Tensor, shape: ModelShape,
                kv_heads: int) -> tuple[dict[str, Tensor], dict]:
    """One layer's merged projections (float64) and its kept energies; `cov` is the layer's
    (2 n d, 2 n d) moment of [k_proj; v_proj] outputs (collect_kv_moments)."""
    d, n, heads = shape.head_dim, shape.kv_heads, shape.heads
    s, latent = n // kv_heads, shape.latent
    old_group = heads // n
    q = wq.double().view(heads, d, -1)  # (H, d, D)
    k = wk.double().view(n, d, -1)  # (n, d, D)
    v = wv.double().view(n, d, -1)
    o = wo.double().view(-1, heads, d)  # (D, H, d): head h's columns
    new_q, new_o = torch.empty_like(q), torch.empty_like(o)
    new_k, new_v, key_kept, value_kept = [], [], [], []
    for j in range(kv_heads):
        members = torch.arange(j * s, (j + 1) * s)
        u, kept = top_complex_directions(key_covariance(cov[:latent, :latent], members, d))
        new_k.append(merge_keys(k[members].transpose(1, 2), u).T)  # (d, D)
        dims = (members[:, None] * d + torch.arange(d)).reshape(-1)  # (s d,)
        basis, vkept = value_basis(cov[latent:, latent:][dims][:, dims], d)  # (s d, d)
        new_v.append(basis.T @ v[members].reshape(s * d, -1))  # (d, D)
        for h in range(j * s * old_group, (j + 1) * s * old_group):  # the query heads of head j
            member = h // old_group - j * s
            new_q[h] = scale_query(q[h].T, u[:, member]).T
            new_o[:, h] = o[:, h] @ basis[member * d:(member + 1) * d]
        key_kept.append(kept)
        value_kept.append(vkept)
    weights = {"q_proj": new_q.reshape(heads * d, -1), "k_proj": torch.cat(new_k),
               "v_proj": torch.cat(new_v), "o_proj": new_o.reshape(o.shape[0], heads * d)}
    return weights, {"key_energy": sum(key_kept) / kv_heads, "value_energy": sum(value_kept) / kv_heads}


@torch.no_grad()
def convert(model: nn.Module, calib: Tensor, cfg: KVMergeConfig, record: CalibrationRecord | None = None,
            moments: list[Tensor] | None = None) -> tuple[nn.Module, dict]:
    """(the same class of model with cfg.kv_heads KV heads, report). `moments`
    (collect_kv_moments of `calib`) lets a sweep share one calibration pass."""
    shape = cfg.check_model(model.config)
    if moments is None:
        moments = collect_kv_moments(model, calib)
    param = next(model.parameters())
    config = copy.deepcopy(model.config)
    config.num_key_value_heads = cfg.kv_heads
    out = type(model)(config).to(dtype=param.dtype, device=param.device).eval()
    state = model.state_dict()
    rows = []
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        weights, kept = merge_layer(attn.q_proj.weight.cpu(), attn.k_proj.weight.cpu(),
                                    attn.v_proj.weight.cpu(), attn.o_proj.weight.cpu(), moments[i],
                                    shape, cfg.kv_heads)
        for name, value in weights.items():
            state[f"model.layers.{i}.self_attn.{name}.weight"] = value.to(param.dtype)
        rows.append({"layer": i, **kept})
    out.load_state_dict(state)
    record = record or CalibrationRecord.of(calib, "in-memory", cfg.seed)
    return out, {"kv_heads": cfg.kv_heads, "from_kv_heads": shape.kv_heads,
                 "calibration": record.to_dict(), "layers": rows}
