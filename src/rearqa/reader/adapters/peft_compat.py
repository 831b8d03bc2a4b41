"""PEFT's transformers-v5 MoE remap, kept away from dense models that share an MoE model type.

PEFT 0.21 on transformers 5 rewrites a LoRA config for model types whose MoE experts were fused
in v5 (Mixtral, Qwen2-MoE and, through the same conversion pattern, DeepseekV3): a target named
`gate_proj`, `up_proj` or `down_proj` (also what "all-linear" expands to) becomes a *parameter*
target on the fused expert tensors (`gate_up_proj`, `down_proj`). A converted reader is a dense
DeepseekV3 (every layer a plain MLP, `first_k_dense_replace` = the layer count): it has no expert
tensors, so the remap sends its MLP targets nowhere and LoRA silently skips the dense MLP, when
wrapping and when loading alike. `dense_targets(model)` turns the remap off while PEFT builds or
loads an adapter on a model without fused experts; on a real MoE model it changes nothing.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

FUSED_EXPERT_PARAMETERS = ("gate_up_proj",)  # what v5 MoE layers hold and dense ones lack


def has_fused_experts(model: nn.Module) -> bool:
    return any(name.rsplit(".", 1)[-1] in FUSED_EXPERT_PARAMETERS
               for name, _ in model.named_parameters())


@contextmanager
def dense_targets(model: nn.Module) -> Iterator[None]:
    """Inside: PEFT targets `model`'s modules by their own names (no MoE remap) when `model`
    has no fused expert tensors."""
    try:
        from peft.utils import transformers_weight_conversion as conversion
    except ImportError:  # a PEFT without the v5 remap: nothing to turn off
        yield
        return
    original = getattr(conversion, "convert_peft_config_for_transformers", None)
    if original is None or has_fused_experts(model):
        yield
        return
    conversion.convert_peft_config_for_transformers = lambda *args, **kwargs: None
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = original
