"""KV-head merging's settings, and the checks that need the model's shape (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.config import TransformConfig
from rearqa.reader.backbone.transmla.config import ModelShape


@dataclass
class KVMergeConfig(TransformConfig):
    """How many KV heads a GQA reader keeps, and the calibration text the merge is fitted to."""

    kv_heads: int = 1  # KV heads after the merge: a divisor of the model's count (SmolLM2: 1 or 3)
    calib_passages: int = 128  # corpus calibration samples (passages joined, cut to calib_tokens)
    calib_tokens: int = 256  # tokens per calibration sample

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("kv_heads", "calib_passages", "calib_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"kv_merge.{name}={value!r}: must be a positive integer")

    def check_model(self, config: Any) -> ModelShape:
        """The model's attention shape, or a ConfigError naming the KV-head counts it takes."""
        shape = ModelShape.of(config)
        valid = [n for n in range(1, shape.kv_heads + 1) if shape.kv_heads % n == 0]
        if self.kv_heads not in valid:
            raise ConfigError(f"kv_merge.kv_heads={self.kv_heads}: this model has {shape.kv_heads} "
                              f"KV heads, which merge in equal groups into one of {valid}")
        if shape.head_dim % 2:
            raise ConfigError(f"kv_merge: head_dim {shape.head_dim} is odd; RoPE needs pairs")
        if getattr(config, "attention_bias", False):
            raise ConfigError("kv_merge: attention biases are not folded; the model has "
                              "attention_bias=True")
        return shape
