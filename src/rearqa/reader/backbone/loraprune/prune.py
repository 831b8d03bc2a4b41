"""The mask applied physically: a Llama sliced to the kept heads and channels.

A pruned KV group takes its k_proj/v_proj rows and, with them, the q_proj rows and o_proj columns
of its G query heads, so G (query heads per KV head) is unchanged and transformers' repeat_kv
still pairs each kept query head with its own KV head. A pruned MLP channel takes its gate_proj
and up_proj rows and its down_proj column. The result is a new LlamaForCausalLM whose config has
the kept counts (num_attention_heads, num_key_value_heads, intermediate_size) and an explicit
head_dim (hidden_size / heads no longer gives it), the same function as the masked model
(mask.install_mask) and a checkpoint any engine loads.
"""
from __future__ import annotations

import copy

import torch

from rearqa.reader.backbone.loraprune.config import PruneShape
from rearqa.reader.backbone.loraprune.mask import PruneMask


def prune_model(model: torch.nn.Module, mask: PruneMask) -> torch.nn.Module:
    """`model` (a plain Llama causal LM: merge any LoRA first) sliced to `mask`, as a new model in
    the same dtype; `model` itself is left as it was."""
    shape = PruneShape.of(model.config)
    mask.check_model(shape)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    for layer, (kv_keep, mlp_keep) in enumerate(zip(mask.kv_keep, mask.mlp_keep)):
        _slice_attention(state, f"model.layers.{layer}.self_attn", kv_keep, shape)
        _slice_mlp(state, f"model.layers.{layer}.mlp", mlp_keep)
    config = copy.deepcopy(model.config)
    config.head_dim = shape.head_dim
    config.num_key_value_heads = mask.kv_groups
    config.num_attention_heads = mask.kv_groups * shape.group_size
    config.intermediate_size = mask.mlp_channels
    dtype = next(model.parameters()).dtype
    pruned = type(model)(config).to(dtype)
    missing, unexpected = pruned.load_state_dict(state, strict=False)
    # A tied lm_head is not in the state dict of a tied model; anything else must match.
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"pruned weights do not fit the pruned model: missing {missing}, "
                           f"unexpected {unexpected}")
    if config.tie_word_embeddings:
        pruned.tie_weights()
    return pruned.eval()


def _rows(index: list[int], width: int) -> torch.Tensor:
    """Indices of the rows of the units in `index`, each `width` rows."""
    return (torch.tensor(index)[:, None] * width + torch.arange(width)).reshape(-1)


def _slice_attention(state: dict, prefix: str, kv_keep: list[int], shape: PruneShape) -> None:
    q_heads = [g * shape.group_size + j for g in kv_keep for j in range(shape.group_size)]
    q_rows = _rows(q_heads, shape.head_dim)
    kv_rows = _rows(kv_keep, shape.head_dim)
    for proj, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
        for kind in ("weight", "bias"):
            key = f"{prefix}.{proj}.{kind}"
            if key in state:
                state[key] = state[key][rows].contiguous()
    key = f"{prefix}.o_proj.weight"
    state[key] = state[key][:, q_rows].contiguous()  # o_proj's bias (if any) is on the output side


def _slice_mlp(state: dict, prefix: str, keep: list[int]) -> None:
    index = torch.tensor(keep)
    for proj in ("gate_proj", "up_proj"):
        for kind in ("weight", "bias"):
            key = f"{prefix}.{proj}.{kind}"
            if key in state:
                state[key] = state[key][index].contiguous()
    key = f"{prefix}.down_proj.weight"
    state[key] = state[key][:, index].contiguous()
