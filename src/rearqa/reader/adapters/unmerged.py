"""An adapter kept unmerged on engine hf (reader.hf_adapter 'unmerged'), its linear layers run by
the fused LoRA op.

Merging (reader.hf_adapter 'merged', the default) folds the update into the weights: generation
then costs what the base model costs, and the weights as loaded are gone. 'unmerged' keeps them
and replaces each adapted linear layer with `FusedLoraLinear`, which computes

    y = x W^T + b + (x A^T) B^T

in one `lora_linear` op (rearqa.kernels.lora_linear: the Triton kernel on CUDA, where B A is never
formed and x A^T never written; its torch reference elsewhere). A and B are the plain-LoRA factors
the layer's export writes (export.lora_factors: the method's scaling folded into A, Hydra's A_s W0
formed once here from the weights as loaded), so plain LoRA, Hydra, DV-LoRA, GDV-LoRA with a gate
that does not read the input, and Block-LoRA all run through the op.

A layer without exact low-rank factors keeps its own PEFT layer and runs as PEFT runs it: MASA
(its update mixes full-size atoms), GDV-LoRA's input gate (an update that is no weight: the only
way to serve it), a PEFT variant (DoRA, ...), a LoRA bias. Token rows and whole modules an adapter
trains (REAR's new tokens) are merged as PEFT merges them when every layer was fused; otherwise
the PEFT wrapper stays and runs them unmerged too.

Inference only: the op has no backward on CUDA, so a `FusedLoraLinear` refuses to run in training
mode.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from rearqa.kernels.lora_linear import lora_linear

logger = logging.getLogger(__name__)


class FusedLoraLinear(nn.Linear):
    """A linear layer with an unmerged low-rank update, run by the fused LoRA op (inference only).

    weight and bias are the base layer's own tensors; lora_a (r, d_in) carries the scaling and
    lora_b is (d_out, r): the layer computes x W^T + b + (x A^T) B^T."""

    def __init__(self, base: nn.Linear, lora_a: torch.Tensor, lora_b: torch.Tensor) -> None:
        nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate a fresh weight
        self.in_features, self.out_features = base.in_features, base.out_features
        rank = lora_a.shape[0]
        if lora_a.shape != (rank, self.in_features) or lora_b.shape != (self.out_features, rank):
            raise ValueError(f"factors A {tuple(lora_a.shape)}, B {tuple(lora_b.shape)} do not fit a "
                             f"{self.in_features} -> {self.out_features} layer: expected (r, "
                             f"{self.in_features}) and ({self.out_features}, r)")
        self.weight, self.bias = base.weight, base.bias
        dtype = base.weight.dtype
        self.lora_a = nn.Parameter(lora_a.detach().to(dtype).contiguous(), requires_grad=False)
        self.lora_b = nn.Parameter(lora_b.detach().to(dtype).contiguous(), requires_grad=False)
        self.train(base.training)

    @property
    def rank(self) -> int:
        return self.lora_a.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedLoraLinear runs the fused LoRA op, which has no backward on CUDA: "
                               "it serves an adapter (model.eval()); train through PEFT's layers")
        return lora_linear(x, self.weight, self.lora_a, self.lora_b, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"


def fused_factors(layer: nn.Module, adapter: str) -> tuple[torch.Tensor, torch.Tensor] | str:
    """The exact plain-LoRA factors (A with the scaling folded in, B) of one adapted layer, or why
    it has none and keeps its own PEFT layer. The export's own refusals (an input gate, a PEFT
    variant, fan_in_fan_out, a merged adapter) say why, through export.lora_factors."""
    from rearqa.reader.adapters.custom import RearLoraLinear
    from rearqa.reader.adapters.export import lora_factors

    base = layer.get_base_layer()
    if not isinstance(base, nn.Linear):
        return f"its base layer is a {type(base).__name__}, not a Linear"
    if len(layer.r) != 1:
        return f"it holds {len(layer.r)} adapters"
    if isinstance(layer, RearLoraLinear) and not layer.exports_exactly:  # before an SVD is computed
        return f"{layer.method_name}'s update is not low rank"
    if not isinstance(layer, RearLoraLinear) and layer.lora_B[adapter].bias is not None:
        return "its LoRA has a bias"  # the export has no slot for it
    try:
        with torch.no_grad():
            a, b, _ = lora_factors(layer, adapter)  # exact: no SVD error after the check above
    except ValueError as err:
        return str(err)
    return a, b


def unmerged_lora(peft_model: nn.Module, adapter: str = "default") -> nn.Module:
    """`peft_model` (load_adapter's) with each adapted linear layer replaced by a FusedLoraLinear
    where its update has exact low-rank factors (see the module docstring). Returns the base model
    with the rest of the adapter (token rows, modules) merged when every layer was fused, else
    the PEFT model, whose remaining layers run unmerged as PEFT runs them."""
    from rearqa.reader.adapters.export import holds_adapter

    base = peft_model.get_base_model()
    fused, kept = 0, {}
    for name, layer in list(base.named_modules()):
        if not holds_adapter(layer, adapter):
            continue
        factors = fused_factors(layer, adapter)
        if isinstance(factors, str):
            kept[name] = factors
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(base.get_submodule(parent), leaf, FusedLoraLinear(layer.get_base_layer(), *factors))
        fused += 1
    if kept:
        reasons = sorted(set(kept.values()))
        logger.info("adapter %r unmerged: %d linear layers run the fused LoRA op, %d keep their PEFT "
                    "layer (%s)", adapter, fused, len(kept), "; ".join(reasons))
        return peft_model
    if not fused:
        raise ValueError(f"adapter {adapter!r} has no LoRA layers in the model")
    logger.info("adapter %r unmerged: all %d adapted linear layers run the fused LoRA op", adapter, fused)
    return peft_model.merge_and_unload()  # what is left: token rows and modules_to_save, if any


def served_lm(peft_model: nn.Module, mode: str) -> nn.Module:
    """How engine hf runs a loaded adapter (reader.hf_adapter): 'merged' into the weights (serving
    pays only for the base matmuls), or 'unmerged', the weights as loaded with the fused op beside
    them (unmerged_lora). A merge that cannot be done (an update that is no weight: GDV-LoRA's input
    gate) is a ConfigError naming the fix."""
    from rearqa.config_errors import ConfigError

    if mode == "unmerged":
        return unmerged_lora(peft_model.eval())
    try:
        return peft_model.merge_and_unload()
    except ValueError as err:
        raise ConfigError(f"the adapter cannot be merged into the weights: {err}. Set "
                          "reader.hf_adapter: unmerged") from err
