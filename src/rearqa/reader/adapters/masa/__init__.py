"""MASA as an adapter (Zhussip et al., 2025, "Share Your Attention: Transformer Weight Sharing via
Matrix-based Dictionary Learning", arXiv 2508.04581; reference code mts-ai/MASA, not reachable
here).

The paper writes each layer's attention projection of type p (q, k, v, o) as a combination of a
small dictionary of matrix atoms shared by all layers, W^p_l = sum_s c_{l,s} D^p_s, and trains
atoms and coefficients from scratch (S = L / 3 atoms cut the attention parameters by 66.7%).
Here the same form is the *update* over the frozen base, ΔW^p_l = (alpha / r) sum_s c_{l,s} D^p_s:
one dictionary per projection type (the leaf name, q_proj, ...), each layer its own S
coefficients.

Why full-size atoms, as in the paper, and not low-rank ones: a factored atom B_s A_s would make
MASA a LoRA whose factors are shared (and exactly exportable at rank S r), a different method.
Full atoms cost S d_out d_in per projection type, independent of the layer count: SmolLM2-135M
(30 layers) at S = 4 on q, k, v, o trains 3.5M atom values plus 480 coefficients, against 1.8M
for rank-16 LoRA on the same projections. The update of one layer is full rank in general, so
the export to plain LoRA (what vLLM serves) is a truncated SVD per layer at rank r, its relative
error recorded in rearqa_export.json; merging is exact (layer.py says how the shared atoms live
inside PEFT).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import ClassVar

from rearqa.reader.adapters.custom import CustomMethod, RearLoraConfig
from rearqa.reader.adapters.masa.config import MasaSettings
from rearqa.reader.adapters.masa.layer import MasaLinear


@dataclass
class MasaLoraConfig(RearLoraConfig):
    """PEFT's LoraConfig plus MASA's dictionary (saved in adapter_config.json)."""

    layer_cls: ClassVar[type] = MasaLinear
    rearqa_method: str = field(default="masa")
    masa_atoms: int = field(default=4)
    masa_init: str = field(default="zero")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._owners: dict[tuple, weakref.ref] = {}  # no field: never saved; weak: keeps no layer alive

    def owners(self, group: tuple, owner: MasaLinear | None = None) -> MasaLinear | None:
        """The layer holding `group`'s atoms in the build under way (None: not built yet); with
        `owner`, record it."""
        if owner is not None:
            self._owners[group] = weakref.ref(owner)
            return owner
        ref = self._owners.get(group)
        return ref() if ref is not None else None

    def injected(self) -> None:
        self._owners.clear()


class MasaMethod(CustomMethod):
    name: ClassVar[str] = "masa"
    config_cls: ClassVar[type[MasaSettings]] = MasaSettings
    peft_config_cls: ClassVar[type[RearLoraConfig]] = MasaLoraConfig
    exports_to_lora: ClassVar[bool] = False  # not exactly: only as a truncated SVD, its error recorded

    @staticmethod
    def method_fields(settings: MasaSettings) -> dict:
        return {"masa_atoms": settings.atoms, "masa_init": settings.init}
