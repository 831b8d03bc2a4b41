"""Per-group importance of a LoRA-wrapped Llama, from the LoRA weights and their gradients.

For a LoRA layer W + s B A the gradient of the frozen W is estimated as the reference code does,
G ~ dB A + B dA - dB dA, and the importance of each weight is |G * (W + s B A)| (a first-order
estimate of the loss change when the weight is removed). Each group's importance is the sum over
its weights in every projection it spans:

    attention group g (one KV head, G query heads g*G .. g*G+G-1, as transformers' repeat_kv
    lays them out): q_proj rows of those query heads, k_proj and v_proj rows of head g,
    o_proj columns of those query heads
    MLP channel c: gate_proj row c, up_proj row c, down_proj column c

then L2-normalised within the layer, so each step weighs the same in the running average.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from rearqa.reader.backbone.loraprune.config import PruneShape

# a LoRA layer's dotted name: ...layers.3.self_attn.q_proj
_TARGET = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)$")
ATTN_PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJS = ("gate_proj", "up_proj", "down_proj")


@dataclass
class GroupScores:
    """Importance of every group: attention (layers, kv_heads), MLP (layers, intermediate)."""

    attn: torch.Tensor
    mlp: torch.Tensor


@torch.no_grad()
def weight_importance(module: torch.nn.Module) -> torch.Tensor:
    """|G * (W + s B A)| of one PEFT LoRA Linear after backward: (out, in), float32."""
    adapter = module.active_adapters[0]
    a = module.lora_A[adapter].weight.float()  # (r, in)
    b = module.lora_B[adapter].weight.float()  # (out, r)
    if a.grad is None or b.grad is None:
        raise ValueError("LoRA importance needs the gradients of lora_A and lora_B: call it after "
                         "backward and before the optimiser zeroes them")
    da, db = a.grad.float(), b.grad.float()
    grad = db @ a + b @ da - db @ da  # (out, in): the estimated gradient of W
    merged = module.get_base_layer().weight.float() + module.scaling[adapter] * (b @ a)
    return (grad * merged).abs()


def _group_sums(proj: str, imp: torch.Tensor, shape: PruneShape) -> torch.Tensor:
    """One projection's importance summed per group: (kv_heads,) or (intermediate,)."""
    if proj in ("q_proj", "o_proj"):
        per_dim = imp.sum(1) if proj == "q_proj" else imp.sum(0)  # (heads * head_dim,)
        return per_dim.view(shape.kv_heads, shape.group_size * shape.head_dim).sum(1)
    if proj in ("k_proj", "v_proj"):
        return imp.sum(1).view(shape.kv_heads, shape.head_dim).sum(1)
    return imp.sum(0) if proj == "down_proj" else imp.sum(1)  # (intermediate,)


def lora_importance(model: torch.nn.Module, shape: PruneShape) -> GroupScores:
    """This step's group importances of the PEFT LoRA `model` (after backward). Projections
    without a LoRA add nothing; a model with no LoRA on any attention or MLP projection is refused."""
    from peft.tuners.lora import LoraLayer

    device = next(model.parameters()).device  # kept there: no host sync per step
    attn = torch.zeros(shape.layers, shape.kv_heads, device=device)
    mlp = torch.zeros(shape.layers, shape.intermediate, device=device)
    seen = {"self_attn": False, "mlp": False}
    for name, module in model.named_modules():
        match = _TARGET.search(name)
        if match is None or not isinstance(module, LoraLayer):
            continue
        layer, block, proj = int(match[1]), match[2], match[3]
        sums = _group_sums(proj, weight_importance(module), shape).to(device)
        (attn if block == "self_attn" else mlp)[layer] += sums
        seen[block] = True
    missing = [block for block, found in seen.items() if not found]
    if missing:
        raise ValueError(f"no LoRA on any {' or '.join(missing)} projection: LoRAPrune scores groups "
                         f"from the LoRA; target {list(ATTN_PROJS + MLP_PROJS)} (or all-linear)")
    return GroupScores(_normalise(attn), _normalise(mlp))


def _normalise(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's row scaled to unit L2 norm (a row of zeros stays zero)."""
    return scores / scores.norm(dim=1, keepdim=True).clamp_min(1e-12)
