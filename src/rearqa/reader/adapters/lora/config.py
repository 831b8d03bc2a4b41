"""Plain LoRA's settings: the shared ones (rank, alpha, dropout, target), nothing of its own."""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.reader.adapters.config import AdapterSettings


@dataclass
class LoraSettings(AdapterSettings):
    """Plain LoRA: h = W0 x + (alpha / r) B A x on every target linear layer."""
