"""The contract of an adapter method."""
from __future__ import annotations

from typing import ClassVar, Protocol

from torch import nn

from rearqa.reader.adapters.config import AdapterSettings


class AdapterMethod(Protocol):
    """One registered LoRA-family method."""

    name: ClassVar[str]  # its key in ADAPTERS
    config_cls: ClassVar[type[AdapterSettings]]  # its typed settings
    exports_to_lora: ClassVar[bool]  # its update is exactly plain LoRA A/B of some rank (vLLM serves it)

    @staticmethod
    def wrap(model: nn.Module, settings: AdapterSettings,
             trainable_token_indices: dict[str, list[int]] | None = None) -> nn.Module:
        """The PEFT model with the adapter on `settings.target`; `trainable_token_indices`:
        embedding module name -> vocabulary rows to train as well (new tokens)."""
        ...
