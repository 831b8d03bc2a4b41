"""The mask applied physically: a Llama sliced to the kept heads and channels.

A pruned KV group takes its k_proj/v_proj rows and, with them, the q_proj rows and o_proj columns
of its G query heads, so G (query heads per KV head) is unchanged and transformers' repeat_kv
still pairs each kept query head with its own KV head. A pruned MLP channel takes its gate_proj
and up_proj rows and its down_proj column. The result is a new LlamaForCausalLM whose config has
the kept counts (num_attention_heads, num_key_value_heads, intermediate_size) and an explicit
head_dim (hidden_size / heads no longer gives it), the same function as the masked model
(mask.install_mask) and a checkpoint any engine loads.

`slice_lora` cuts a LoRA trained over the unpruned model the same way (B's rows where the weight's
rows go, A's columns where its columns go), so merging the sliced LoRA into the pruned model is
exactly pruning the merged model: the heal ships as an adapter over the pruned reader.
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


def slice_lora(state: dict[str, torch.Tensor], mask: PruneMask, shape: PruneShape
               ) -> dict[str, torch.Tensor]:
    """A PEFT LoRA state dict over the unpruned model (keys ...layers.N.self_attn.q_proj.lora_A.weight)
    sliced to `mask`: lora_B rows of q/k/v_proj and gate/up_proj, lora_A columns of o_proj and
    down_proj; everything else as it is. Merged into prune_model's output it gives prune_model
    of the merged model."""
    import re

    target = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.")
    out = {}
    for key, tensor in state.items():
        match = target.search(key)
        if match is None:
            out[key] = tensor
            continue
        layer, proj, side = int(match[1]), match[2], match[3]
        kv_keep, mlp_keep = mask.kv_keep[layer], mask.mlp_keep[layer]
        q_heads = [g * shape.group_size + j for g in kv_keep for j in range(shape.group_size)]
        index = {"q_proj": _rows(q_heads, shape.head_dim), "o_proj": _rows(q_heads, shape.head_dim),
                 "k_proj": _rows(kv_keep, shape.head_dim), "v_proj": _rows(kv_keep, shape.head_dim),
                 "gate_proj": torch.tensor(mlp_keep), "up_proj": torch.tensor(mlp_keep),
                 "down_proj": torch.tensor(mlp_keep)}[proj].to(tensor.device)
        if proj in ("o_proj", "down_proj"):
            out[key] = tensor[:, index].contiguous() if side == "A" else tensor
        else:
            out[key] = tensor[index].contiguous() if side == "B" else tensor
    return out
