"""Block-LoRA, rearqa's reading of its abstract (Zhou, Shen, Yu, Bu and Wang, 2025, "One Head Eight
Arms: Block Matrix based Low Rank Adaptation for CLIP-based Few-Shot Learning", arXiv 2501.16720).

The abstract: LoRA's low-rank matrices are partitioned into sub-matrices and all down-projection
sub-matrices are shared, which cuts trainable parameters and turns some matrix products into
additions. Only the abstract could be read here, so this form is derived from it and is the
project's own variant until checked against the paper's method section (docs/adapters.md): split
LoRA's rank r into n blocks, B A = sum_i B_i A_i, and share A_i = A_s, so the update is
(B_1 + ... + B_n) A_s: one shared head, n arms (`share: rank`, the default). That form is exactly
plain LoRA of rank r / n whose n up-projection blocks get the same gradient, so a second reading is
offered (`share: input`): partition A by the input's columns, as block-matrix LoRA variants do,
and share those blocks, so A x = A_s (x_1 + ... + x_n), the sum of x's n column chunks, and the
update B [A_s ... A_s] keeps rank up to r. Both are linear in x and do not read W0, so they merge
exactly and export exactly as plain LoRA, of rank r / n and r (layer.py). Which one the paper
means is unverified (docs/adapters.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rearqa.reader.adapters.blocklora.config import BlockLoraSettings
from rearqa.reader.adapters.blocklora.layer import BlockLoraLinear
from rearqa.reader.adapters.custom import CustomMethod, RearLoraConfig


@dataclass
class BlockLoraConfig(RearLoraConfig):
    """PEFT's LoraConfig plus Block-LoRA's block count (saved in adapter_config.json)."""

    layer_cls: ClassVar[type] = BlockLoraLinear
    rearqa_method: str = field(default="blocklora")
    blocklora_blocks: int = field(default=2)
    blocklora_init: str = field(default="zero")
    blocklora_share: str = field(default="rank")


class BlockLoraMethod(CustomMethod):
    name: ClassVar[str] = "blocklora"
    config_cls: ClassVar[type[BlockLoraSettings]] = BlockLoraSettings
    peft_config_cls: ClassVar[type[RearLoraConfig]] = BlockLoraConfig

    @staticmethod
    def method_fields(settings: BlockLoraSettings) -> dict:
        return {"blocklora_blocks": settings.blocks, "blocklora_init": settings.init,
                "blocklora_share": settings.share}
