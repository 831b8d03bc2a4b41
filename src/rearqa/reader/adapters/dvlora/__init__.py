"""DV-LoRA and GDV-LoRA (Cui et al., 2025, Endo3DAC: "Learning to Efficiently Adapt Foundation
Models for Self-Supervised Endoscopic 3D Scene Reconstruction from Any Cameras", arXiv 2503.15917;
DV-LoRA first in their EndoDAC).

LoRA whose rank bottleneck is wrapped in trainable scaling vectors, delta = diag(b) B diag(d) A
(LoRA's trainable A and B plus VeRA-style vectors), and in the gated variant a gate g on the
update. One method with a `gate` setting rather than two names: DV-LoRA is GDV-LoRA with the gate
off; the layer, the vectors and the export are the same. An input-independent gate ("none",
"scalar") merges exactly and exports exactly as plain LoRA of rank r by folding g, b and d into
A and B; the input gate ("input") is hf only (layer.py). The DV-LoRA form is the one in the
authors' EndoDAC code (s diag(v) B diag(u) A, their `DVLinear`; their vectors start random and train
in a second phase, ours start at 1 and train with A and B); the gate is unverified. The scalar gate
sigmoid(gamma) starts at gamma = 0 and trains at the run's one learning rate; under Adam that moves
it about lr a step, so a short run keeps it near 1/2 (the equal-budget REAR runs: 0.4997-0.512
after 300 steps at 3e-4), which halves every update. docs/adapters.md says what was checked and how.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rearqa.reader.adapters.custom import CustomMethod, RearLoraConfig
from rearqa.reader.adapters.dvlora.config import DVLoraSettings
from rearqa.reader.adapters.dvlora.layer import INPUT_GATE_REFUSAL, DVLoraLinear


@dataclass
class DVLoraConfig(RearLoraConfig):
    """PEFT's LoraConfig plus DV-LoRA's vectors and gate (saved in adapter_config.json)."""

    layer_cls: ClassVar[type] = DVLoraLinear
    rearqa_method: str = field(default="dvlora")
    dvlora_gate: str = field(default="none")
    dvlora_vector_init: float = field(default=1.0)
    dvlora_init: str = field(default="zero")


class DVLoraMethod(CustomMethod):
    name: ClassVar[str] = "dvlora"
    config_cls: ClassVar[type[DVLoraSettings]] = DVLoraSettings
    peft_config_cls: ClassVar[type[RearLoraConfig]] = DVLoraConfig
    exports_to_lora: ClassVar[bool] = True  # with gate "none" or "scalar"; "input" is hf only

    @staticmethod
    def saved_export_refusal(saved: dict) -> str | None:
        return INPUT_GATE_REFUSAL if saved.get("dvlora_gate") == "input" else None

    @staticmethod
    def method_fields(settings: DVLoraSettings) -> dict:
        return {"dvlora_gate": settings.gate, "dvlora_vector_init": settings.vector_init,
                "dvlora_init": settings.init}
