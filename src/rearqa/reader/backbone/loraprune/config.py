"""LoRAPrune's settings, and the checks that need the model's shape (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.config import TransformConfig


@dataclass
class LoRAPruneConfig(TransformConfig):
    """What a LoRAPrune run keeps, and how it chooses."""

    kv_groups: int = 0  # KV heads kept per layer (each with its query heads); 0: as the mask says
    mlp_channels: int = 0  # MLP intermediate channels kept per layer; 0: as the mask says
    mask: str = ""  # a mask JSON (mask.py) to prune to at conversion; "": none (training chooses)
    ema: float = 0.9  # weight of the running importance against each step's new estimate
    prune_start: float = 0.1  # fraction of the steps after which pruning begins (importance warms up)
    prune_end: float = 0.7  # fraction of the steps by which the target sparsity is reached
    prune_every: int = 10  # steps between pruning steps on the cubic schedule
    file_settings: ClassVar[tuple[str, ...]] = ("mask",)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("kv_groups", "mlp_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"loraprune.{name}={value!r}: a positive count to keep per layer "
                                  "(or 0: take it from the mask)")
        if not isinstance(self.mask, str):
            raise ConfigError(f"loraprune.mask={self.mask!r}: a path to a mask JSON, or ''")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"loraprune.ema={self.ema!r}: must be in [0, 1), e.g. 0.9")
        if not 0 <= self.prune_start < self.prune_end <= 1:
            raise ConfigError(f"loraprune.prune_start={self.prune_start!r}, prune_end="
                              f"{self.prune_end!r}: need 0 <= prune_start < prune_end <= 1")
        if isinstance(self.prune_every, bool) or not isinstance(self.prune_every, int) \
                or self.prune_every < 1:
            raise ConfigError(f"loraprune.prune_every={self.prune_every!r}: a positive step count")

    def check_model(self, config: Any) -> "PruneShape":
        """The model's prunable shape; a ConfigError naming the valid counts when a target cannot
        be met (more groups than exist, none at all)."""
        shape = PruneShape.of(config)
        if self.kv_groups and not 1 <= self.kv_groups <= shape.kv_heads:
            raise ConfigError(f"loraprune.kv_groups={self.kv_groups}: this model has {shape.kv_heads} "
                              f"KV heads per layer; keep 1..{shape.kv_heads}")
        if self.mlp_channels and not 1 <= self.mlp_channels <= shape.intermediate:
            raise ConfigError(f"loraprune.mlp_channels={self.mlp_channels}: this model's MLP is "
                              f"{shape.intermediate} wide; keep 1..{shape.intermediate}")
        return shape

    def check_targets(self, config: Any) -> "PruneShape":
        """As check_model, and both targets must be set (a training run needs them)."""
        for name in ("kv_groups", "mlp_channels"):
            if not getattr(self, name):
                raise ConfigError(f"loraprune.{name}=0: a training run needs the count to keep")
        return self.check_model(config)


@dataclass(frozen=True)
class PruneShape:
    """The prunable widths of a Llama-style GQA model."""

    layers: int
    heads: int  # query heads per layer
    kv_heads: int  # KV heads (attention groups) per layer
    head_dim: int
    intermediate: int  # MLP channels per layer

    @classmethod
    def of(cls, config: Any) -> "PruneShape":
        from rearqa.reader.backbone.transmla.config import ModelShape

        s = ModelShape.of(config)  # the attention shape, read one way for every transform
        return cls(s.layers, s.heads, s.kv_heads, s.head_dim, config.intermediate_size)

    @property
    def group_size(self) -> int:
        """Query heads per KV head (3 in SmolLM2)."""
        return self.heads // self.kv_heads
