"""Plain LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A frozen weight W0 gets a trainable low-rank update, h = W0 x + (alpha / r) B A x with A (r, d_in)
and B (d_out, r), B starting at zero so training starts from the base model. PEFT's own LoRA layer
implements it (no layer.py here); the recipe is the ECG LoRA paper's: every linear layer but the
output layer ("all-linear"), with new vocabulary rows trained through PEFT's trainable tokens.
Merges exactly, and is what vLLM's LoRA loader serves.
"""
from __future__ import annotations

from typing import ClassVar

from torch import nn

from rearqa.reader.adapters.lora.config import LoraSettings


class LoraMethod:
    name: ClassVar[str] = "lora"
    config_cls: ClassVar[type[LoraSettings]] = LoraSettings
    exports_to_lora: ClassVar[bool] = True

    @staticmethod
    def wrap(model: nn.Module, settings: LoraSettings,
             trainable_token_indices: dict[str, list[int]] | None = None) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        from rearqa.reader.adapters.peft_compat import dense_targets

        extra = {"trainable_token_indices": trainable_token_indices} if trainable_token_indices else {}
        config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=settings.target, task_type="CAUSAL_LM", **extra)
        with dense_targets(model):
            return get_peft_model(model, config)
