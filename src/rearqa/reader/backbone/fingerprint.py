"""A converted reader's fingerprint: a few numbers per converted attention tensor, to tell whether
two machines built the same conversion.

A healed reader ships as its recipe plus a LoRA adapter trained over the converted weights
(recipe.py); the adapter is only valid over the weights it was trained on. The GPU machine that
healed a conversion writes `fingerprint(student)` beside it, and `rearqa convert --recipe` compares
the CPU rebuild with it before merging the adapter.

Per layer, each tensor the conversion wrote (q_proj, kv_a_proj_with_mqa, kv_b_proj and, with a
latent norm, kv_a_layernorm; in a KV-merged or pruned Llama every attention and MLP projection) gives its shape, its sum and absolute sum in float64, and its first
`HEAD` values (row 0: for kv_a_proj_with_mqa the top latent direction, for kv_b_proj the read-out
of the top latent directions). The numbers are taken in the dtype the weights are saved in.

`compare(expected, got)` gives one relative difference per tensor, the largest of
    |sum_a - sum_b| / abs_sum_a,  |abs_sum_a - abs_sum_b| / abs_sum_a,  max|head_a - head_b| / max|head_a|
and its maximum. What the sizes mean (`check`): a bf16 rounding that lands the other way moves a
value by one ulp (2^-8 = 0.4% of it), a float32 PCA on another machine by less; a PCA direction whose
sign flipped (or a different calibration) moves the head values by up to twice their size.
So above `WARN_REL` (1%) the rebuild is reported, above `REFUSE_REL` (50%) it is refused.
"""
from __future__ import annotations

import math
from typing import Any

import torch

FORMAT = 1
HEAD = 16  # first values of each tensor recorded
# The tensors a conversion writes, per layer: an MLA conversion's (DeepseekV3 layout), and, in a
# model without them (a KV-merged or pruned Llama), every projection of attention and MLP.
TENSORS = ("self_attn.q_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj",
           "self_attn.kv_a_layernorm")
LLAMA_TENSORS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
WARN_REL = 1e-2  # above: reported (more than bf16 rounding noise; a PCA that differs a little)
REFUSE_REL = 0.5  # above: refused (a flipped PCA direction, another calibration, another model)


def fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """{"format", "dtype", "tensors": {"layers.3.self_attn.kv_b_proj": {shape, sum, abs_sum, head}}}
    over the converted weights of `model`: TENSORS in a converted MLA reader, LLAMA_TENSORS in a
    Llama (kv_merge, loraprune)."""
    tensors: dict[str, dict[str, Any]] = {}
    dtype = None
    for i, layer in enumerate(model.model.layers):
        names = TENSORS if hasattr(layer.self_attn, "kv_b_proj") else LLAMA_TENSORS
        for name in names:
            module = layer
            for part in name.split("."):
                module = getattr(module, part, None)
            weight = getattr(module, "weight", None)
            if weight is None:  # no latent norm (an identity), or not a converted layer
                continue
            dtype = dtype or str(weight.dtype).removeprefix("torch.")
            w = weight.detach().to("cpu", torch.float64)
            tensors[f"layers.{i}.{name}"] = {
                "shape": list(w.shape), "sum": w.sum().item(), "abs_sum": w.abs().sum().item(),
                "head": w.flatten()[:HEAD].tolist()}
    if not tensors:
        raise ValueError("fingerprint: the model has no converted attention tensors "
                         f"({', '.join(TENSORS)}); give a converted reader")
    return {"format": FORMAT, "dtype": dtype, "tensors": tensors}


def tensor_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The relative difference of one tensor's records (see the module docstring)."""
    scale = max(abs(a["abs_sum"]), 1e-30)
    head_a, head_b = a["head"], b["head"]
    head_scale = max(max((abs(x) for x in head_a), default=0.0), 1e-30)
    head = max((abs(x - y) for x, y in zip(head_a, head_b)), default=0.0) / head_scale
    return max(abs(a["sum"] - b["sum"]) / scale, abs(a["abs_sum"] - b["abs_sum"]) / scale, head)


def compare(expected: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """{"max_rel_diff", "worst" (its tensor), "per_tensor": {name: rel diff}, "mismatched": [what
    cannot be compared: a tensor missing on one side, another shape]}; a mismatch counts as an
    infinite difference. The dtypes may differ (a bf16 conversion fingerprinted after loading it
    in float32 has the same values); what they were is returned as "dtypes"."""
    a, b = expected["tensors"], got["tensors"]
    mismatched = [f"{n}: missing in the rebuild" for n in a if n not in b]
    mismatched += [f"{n}: not in the expected fingerprint" for n in b if n not in a]
    per_tensor = {}
    for name in a.keys() & b.keys():
        if a[name]["shape"] != b[name]["shape"]:
            mismatched.append(f"{name}: shape {a[name]['shape']} expected, {b[name]['shape']} rebuilt")
        else:
            per_tensor[name] = tensor_difference(a[name], b[name])
    worst = max(per_tensor, key=per_tensor.get) if per_tensor else None
    largest = math.inf if mismatched else (per_tensor[worst] if worst else 0.0)
    return {"max_rel_diff": largest, "worst": worst, "per_tensor": per_tensor,
            "mismatched": sorted(mismatched), "dtypes": [expected.get("dtype"), got.get("dtype")]}


def check(expected: dict[str, Any], got: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """("match" | "warn" | "refuse", compare()): "warn" above WARN_REL, "refuse" above REFUSE_REL
    or on any mismatch."""
    result = compare(expected, got)
    diff = result["max_rel_diff"]
    verdict = "refuse" if diff > REFUSE_REL else "warn" if diff > WARN_REL else "match"
    return verdict, result
