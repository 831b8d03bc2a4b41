"""MASA weight surgery (the idea and the paper: the package docstring).

Per projection type p, in float64. X (L, N) stacks the L layers' weights flattened (N = d_out d_in);
its thin SVD X = U Sigma V^T (U (L, L)) gives
    coefficients C = U                       (L, L): orthonormal columns, by falling singular value
    atoms        D = Sigma V^T = U^T X       (L, N): atom s has norm sigma_s
and keeping S of them, W_l ~ sum_{s<S} C[l, s] D[s] (rows of U_S U_S^T X): the best rank-S
approximation of X in the Frobenius norm (Eckart-Young), i.e. the S-atom dictionary with the least
squared weight error summed over the layers. With S = L, U U^T = I and every weight comes back
exactly. Uncentred on purpose: a mean atom plus S - 1 centred components is also rank S, so it
cannot have a smaller squared error. Signs are canonical (each coefficient column's largest entry
positive), so a conversion gives the same atoms on every machine.

What is kept per projection type: the energy sum_{s<S} sigma_s^2 / sum sigma^2 and each layer's
relative error ||W_l - W^_l|| / ||W_l|| (report); biases (none in Llama) stay per layer.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.masa.config import MasaConfig

Decomposition = tuple[Tensor, Tensor, Tensor]  # (coefficients (L, L), atoms (L, d_out, d_in), sigma (L,))


def projection_modules(model: nn.Module, name: str) -> list[nn.Linear]:
    """Each decoder layer's linear module with leaf name `name` (e.g. self_attn.q_proj)."""
    found = []
    for i, layer in enumerate(model.model.layers):
        linear = {n.rsplit(".", 1)[-1]: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        if name not in linear:
            raise ConfigError(f"masa.projections: layer {i} has no linear {name!r}; its linear "
                              f"modules are {sorted(linear)}")
        found.append(linear[name])
    shapes = {tuple(m.weight.shape) for m in found}
    if len(shapes) != 1:
        raise ConfigError(f"masa: {name} has shapes {sorted(shapes)} across the layers; atoms are "
                          "shared by projections of one shape")
    return found


def decompose(weights: list[Tensor]) -> Decomposition:
    """All L atoms of one projection type, by falling singular value (the module docstring)."""
    stack = torch.stack([w.detach().cpu().double() for w in weights])  # (L, d_out, d_in)
    x = stack.reshape(stack.shape[0], -1)  # (L, N)
    u, sigma, vh = torch.linalg.svd(x, full_matrices=False)  # (L, L), (L,), (L, N)
    peak = u.gather(0, u.abs().argmax(dim=0, keepdim=True))  # (1, L): each column's largest entry
    signs = torch.where(peak < 0, -1.0, 1.0).to(u.dtype)
    u, vh = u * signs, vh * signs.T
    return u, (sigma[:, None] * vh).reshape(stack.shape), sigma


def rebuild(coefficients: Tensor, atoms: Tensor) -> Tensor:
    """(L, d_out, d_in) weights from coefficients (L, S) and atoms (S, d_out, d_in)."""
    return torch.einsum("ls,soi->loi", coefficients.double(), atoms.double())


def dictionary(decomposition: Decomposition, atoms: int) -> tuple[Tensor, Tensor]:
    """The first `atoms` of a decomposition: (coefficients (L, S), atoms (S, d_out, d_in))."""
    coefficients, all_atoms, _ = decomposition
    return coefficients[:, :atoms].contiguous(), all_atoms[:atoms].contiguous()


@torch.no_grad()
def load_dictionary(model: nn.Module, tensors: dict[str, Tensor]) -> nn.Module:
    """`model` with each shared projection rebuilt from a saved dictionary ({p}.atoms,
    {p}.coefficients): the compact storage back to the served weights, in place."""
    names = sorted({key.rsplit(".", 1)[0] for key in tensors})
    for name in names:
        weights = rebuild(tensors[f"{name}.coefficients"], tensors[f"{name}.atoms"])
        for module, weight in zip(projection_modules(model, name), weights, strict=True):
            module.weight.copy_(weight.to(module.weight.dtype))
    return model


def convert(model: nn.Module, cfg: MasaConfig, decompositions: dict[str, Decomposition] | None = None
            ) -> tuple[nn.Module, dict[str, Tensor], dict]:
    """(a copy of `model` with the shared projections rebuilt from cfg.atoms atoms each, the
    dictionary {p}.atoms / {p}.coefficients in float64, report). `decompositions` (decompose of each
    projection type) lets a sweep over atom counts share one SVD per type."""
    layers = cfg.check_model(model.config)
    tensors: dict[str, Tensor] = {}
    rows = {}
    for name in cfg.projections:
        modules = projection_modules(model, name)
        full = (decompositions or {}).get(name) or decompose([m.weight for m in modules])
        coefficients, atoms = dictionary(full, cfg.atoms)
        tensors[f"{name}.coefficients"], tensors[f"{name}.atoms"] = coefficients, atoms
        original = torch.stack([m.weight.detach().cpu().double() for m in modules])
        error = (rebuild(coefficients, atoms) - original).flatten(1).norm(dim=1) / original.flatten(1).norm(dim=1)
        energy = full[2].square()
        rows[name] = {"shape": list(atoms.shape[1:]), "energy_kept": (energy[:cfg.atoms].sum() / energy.sum()).item(),
                      "relative_error": error.tolist(), "params_original": original.numel(),
                      "params_compact": atoms.numel() + coefficients.numel()}
    out = load_dictionary(copy.deepcopy(model), tensors)
    return out, tensors, {"atoms": cfg.atoms, "layers": layers, "projections": rows,
                          "params": parameter_counts(model, rows)}


def parameter_counts(model: nn.Module, rows: dict[str, dict]) -> dict:
    """What the compact form stores against the model: the shared projections' parameters before
    and after, and the whole model's (every other tensor kept as it is)."""
    original = sum(r["params_original"] for r in rows.values())
    compact = sum(r["params_compact"] for r in rows.values())
    total = sum(p.numel() for p in model.parameters())
    return {"shared_original": original, "shared_compact": compact,
            "shared_saving": 1 - compact / original, "model_original": total,
            "model_compact": total - original + compact, "model_saving": (original - compact) / total}
