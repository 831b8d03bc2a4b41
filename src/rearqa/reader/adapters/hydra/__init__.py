"""Hydra (Kim et al., 2023, "Hydra: Multi-head Low-rank Adaptation for Parameter Efficient
Fine-tuning", arXiv 2309.06922).

Two low-rank heads on each frozen weight W0: a parallel branch on the layer input, as in LoRA, and
a sequential branch on the base output W0 x, a learned linear recombination of the pre-trained
features: h = W0 x + B_p A_p x + B_s A_s W0 x. Both are linear in x, so the update is a weight
(B_p A_p + B_s A_s W0): it merges exactly and exports exactly as plain LoRA of rank r + r_s
(layer.py), which is what vLLM serves (rearqa.reader.adapters.export).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rearqa.reader.adapters.custom import CustomMethod, RearLoraConfig
from rearqa.reader.adapters.hydra.config import HydraSettings
from rearqa.reader.adapters.hydra.layer import HydraLinear


@dataclass
class HydraLoraConfig(RearLoraConfig):
    """PEFT's LoraConfig plus Hydra's sequential branch (saved in adapter_config.json)."""

    layer_cls: ClassVar[type] = HydraLinear
    rearqa_method: str = field(default="hydra")
    hydra_sequential_r: int = field(default=8)
    hydra_sequential_alpha: float = field(default=16)
    hydra_init: str = field(default="zero")


class HydraMethod(CustomMethod):
    name: ClassVar[str] = "hydra"
    config_cls: ClassVar[type[HydraSettings]] = HydraSettings
    peft_config_cls: ClassVar[type[RearLoraConfig]] = HydraLoraConfig

    @staticmethod
    def method_fields(settings: HydraSettings) -> dict:
        return {"hydra_sequential_r": settings.sequential_r,
                "hydra_sequential_alpha": settings.sequential_alpha, "hydra_init": settings.init}
