"""Export a LoRA-family adapter as plain PEFT LoRA: the form vLLM's `enable_lora` serves.

Each wrapped layer gives factors (A (R, d_in), B (d_out, R)) with the method's scaling folded into
A; the exported config sets lora_alpha = r, so PEFT's scaling is 1 and the exported delta is
exactly B A.

- Exact, not an SVD fit, where the method's update is low-rank by construction (PEFT's
  `convert_to_lora` truncates an SVD of `get_delta_weight`): Hydra at rank r + r_s, DV-LoRA and
  GDV-LoRA with an input-independent gate at rank r, Block-LoRA at rank r / blocks. A method
  whose delta depends on the input (GDV-LoRA's input gate) is refused with the reason.
- Approximate where it is not (`exports_exactly = False`: MASA, whose update mixes full-size
  atoms): each layer's delta is cut to its top `rank` singular directions (default: the layer's r;
  B = U_r, A = S_r V_r^T), and the relative Frobenius error of every layer,
  ||delta - B A|| / ||delta||, is written to rearqa_export.json with `"exact": false`.

The rank is kept as is: vLLM accepts any rank up to its `max_lora_rank` (one of
VLLM_MAX_LORA_RANKS) and pads internally; serve with `max_lora_rank=vllm_max_lora_rank(r)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks (0.32)


def vllm_max_lora_rank(r: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that serves rank `r`."""
    for rank in VLLM_MAX_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"rank {r} exceeds vLLM's largest max_lora_rank {VLLM_MAX_LORA_RANKS[-1]}")


def svd_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A (rank, d_in), B (d_out, rank), relative Frobenius error of B A) from the truncated SVD of
    `delta`; a rank above min(d_out, d_in) is zero-padded, so every layer exports at one rank."""
    d = delta.double()
    u, sv, vh = torch.linalg.svd(d, full_matrices=False)
    k = min(rank, sv.numel())
    b = d.new_zeros(d.shape[0], rank)
    a = d.new_zeros(rank, d.shape[1])
    b[:, :k], a[:k] = u[:, :k], sv[:k, None] * vh[:k]
    norm = torch.linalg.matrix_norm(d)
    error = (torch.linalg.matrix_norm(d - b @ a) / norm).item() if norm > 0 else 0.0
    return a.to(delta.dtype), b.to(delta.dtype), error


def lora_factors(layer: nn.Module, adapter: str, rank: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """Plain-LoRA factors (A, B), scaling folded into A, of one wrapped layer, and the relative
    error of B A (None: exact). A layer without exact factors is cut by SVD to `rank` (None:
    its own r)."""
    from rearqa.reader.adapters.custom import RearLoraLinear

    if isinstance(layer, RearLoraLinear):
        layer._refuse(adapter, "export as plain LoRA")
        w0 = layer.base_weight(adapter)
        if not layer.exports_exactly:
            return svd_factors(layer.delta_weight(adapter, w0), rank or layer.r[adapter])
        return (*layer.lora_factors(adapter, w0), None)
    if layer.lora_variant.get(adapter) is not None or layer.fan_in_fan_out:
        raise ValueError(f"cannot export {type(layer).__name__} with a LoRA variant or fan_in_fan_out")
    if layer.merged:
        raise ValueError("unmerge the adapter before exporting it")
    return layer.lora_A[adapter].weight * layer.scaling[adapter], layer.lora_B[adapter].weight, None


def _check_exportable(peft_model: nn.Module, adapter: str) -> None:
    config = peft_model.peft_config[adapter]
    if getattr(config, "trainable_token_indices", None) or getattr(config, "modules_to_save", None):
        raise ValueError(f"adapter {adapter!r} trains token rows or whole modules besides its LoRA "
                         "layers; vLLM's LoRA loader takes LoRA A/B only: merge it instead")


def _target_names(base: nn.Module, wrapped: list[str]) -> list[str]:
    """Leaf names (q_proj, ...) when each picks exactly the wrapped modules, else full names."""
    from peft.tuners.lora.layer import LoraLayer

    leaves = sorted({name.rsplit(".", 1)[-1] for name in wrapped})
    same_leaf = [n for n, m in base.named_modules()
                 if n.rsplit(".", 1)[-1] in leaves and isinstance(m, (nn.Linear, LoraLayer))]
    return leaves if sorted(same_leaf) == sorted(wrapped) else sorted(wrapped)


def export_lora(peft_model: nn.Module, out_dir: str | Path, adapter: str = "default",
                dtype: torch.dtype = torch.float32, rank: int | None = None) -> Path:
    """Write `adapter` of `peft_model` as a plain PEFT LoRA dir (adapter_config.json +
    adapter_model.safetensors) that PEFT loads without any registration; returns `out_dir`.
    `rank`: the SVD rank of a method without exact factors (None: its r); exact ones refuse it."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    _check_exportable(peft_model, adapter)
    base = peft_model.get_base_model()
    tensors: dict[str, torch.Tensor] = {}
    wrapped: list[str] = []
    ranks = set()
    errors: dict[str, float] = {}
    with torch.no_grad():
        for name, layer in base.named_modules():
            if not holds_adapter(layer, adapter):
                continue
            a, b, error = lora_factors(layer, adapter, rank)
            if error is not None:
                errors[name] = error
            key = f"base_model.model.{name}"
            tensors[f"{key}.lora_A.weight"] = a.to(dtype).contiguous()
            tensors[f"{key}.lora_B.weight"] = b.to(dtype).contiguous()
            wrapped.append(name)
            ranks.add(a.shape[0])
    if not wrapped:
        raise ValueError(f"no LoRA layers of adapter {adapter!r} in the model")
    if len(ranks) != 1:
        raise ValueError(f"layers of adapter {adapter!r} have different ranks {sorted(ranks)}")
    if rank is not None and not errors:
        raise ValueError(f"rank={rank}: adapter {adapter!r} exports exactly at its own rank; "
                         "a rank is only taken by a method exported through an SVD (masa)")
    rank = ranks.pop()
    source = peft_model.peft_config[adapter]
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                        target_modules=_target_names(base, wrapped), task_type="CAUSAL_LM",
                        base_model_name_or_path=source.base_model_name_or_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    record = {"from_method": getattr(source, "rearqa_method", "") or "lora", "rank": rank,
              "vllm_max_lora_rank": vllm_max_lora_rank(rank), "exact": not errors}
    if errors:
        record["approximation"] = {"method": "truncated SVD of each layer's delta",
                                   "relative_error_mean": sum(errors.values()) / len(errors),
                                   "relative_error_max": max(errors.values()),
                                   "relative_error": errors}
    (out / "rearqa_export.json").write_text(json.dumps(record, indent=2))
    return out


def holds_adapter(layer: nn.Module, adapter: str) -> bool:
    """Whether `layer` is a PEFT LoRA-family layer that holds `adapter`."""
    from peft.tuners.lora.layer import LoraLayer

    from rearqa.reader.adapters.custom import RearLoraLinear

    if isinstance(layer, RearLoraLinear):
        return layer.holds(adapter)
    return isinstance(layer, LoraLayer) and adapter in layer.lora_A
