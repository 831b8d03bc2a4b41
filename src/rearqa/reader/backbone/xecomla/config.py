"""X-EcoMLA's settings, and the checks that need the model's shape (torch-free).

Each query head's key is split into `head_dim - rope_dim` dims without RoPE (nope) and `rope_dim`
that keep it, read from one rotary key shared by all heads; the latent is an SVD of the stacked
[W_K; W_V] (KV heads repeated to the query-head count), so its rank is at most
min(2 * n_kv * head_dim, hidden): 384 for SmolLM2 (3 KV heads of 64, hidden 576).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.config import TransformConfig
from rearqa.reader.backbone.transmla.config import ModelShape


@dataclass
class XEcoMLAConfig(TransformConfig):
    """How a GQA reader is upcycled to MLA from an SVD of its weights (no calibration text)."""

    kv_lora_rank: int | None = None  # latent width for every layer; None: per layer by `energy`
    energy: float = 0.99  # per-layer rank: the smallest keeping this share of sum(sigma^2)
    rope_dim: int = 32  # rotary key width (qk_rope_head_dim): an even divisor of head_dim
    rank_multiple: int = 8  # per-layer ranks are rounded up to a multiple of this (then capped)
    latent_norm: bool = False  # an RMSNorm on the latent, as vLLM's DeepSeek model always has

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rope_dim", "rank_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"xecomla.{name}={value!r}: must be a positive integer")
        rank = self.kv_lora_rank
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ConfigError(f"xecomla.kv_lora_rank={rank!r}: a positive integer, or unset to "
                              "choose each layer's rank by xecomla.energy")
        if isinstance(self.energy, bool) or not isinstance(self.energy, (int, float)) \
                or not 0 < self.energy <= 1:
            raise ConfigError(f"xecomla.energy={self.energy!r}: a share of the singular-value "
                              "energy in (0, 1], e.g. 0.99 or 0.95")
        if self.rope_dim % 2:
            raise ConfigError(f"xecomla.rope_dim={self.rope_dim}: must be even (rotary pairs)")
        if not isinstance(self.latent_norm, bool):
            raise ConfigError(f"xecomla.latent_norm={self.latent_norm!r}: true or false")

    def check_model(self, config: Any) -> ModelShape:
        """The model's attention shape, or a ConfigError naming the valid range of each setting."""
        shape = ModelShape.of(config)
        valid_rope = [d for d in range(2, shape.head_dim + 1, 2) if shape.head_dim % d == 0]
        if self.rope_dim not in valid_rope:
            raise ConfigError(f"xecomla.rope_dim={self.rope_dim}: a head of {shape.head_dim} takes "
                              f"an even rope width that divides it (whole rotary pairs at "
                              f"matching frequencies): one of {valid_rope}")
        cap = rank_cap(shape)
        if self.kv_lora_rank is not None and self.kv_lora_rank > cap:
            raise ConfigError(f"xecomla.kv_lora_rank={self.kv_lora_rank}: this model takes 1..{cap} "
                              f"(the rank of [W_K; W_V]: min(2 * {shape.kv_heads} KV heads * "
                              f"{shape.head_dim}, hidden {shape.hidden}))")
        return shape


def rank_cap(shape: ModelShape) -> int:
    """The largest useful latent: the rank [W_K; W_V] can have."""
    return min(2 * shape.latent, shape.hidden)


def energy_rank(cumulative: list[float], energy: float, multiple: int, cap: int) -> int:
    """The smallest r whose cumulative share of sigma^2 (`cumulative[r - 1]`) reaches `energy`,
    rounded up to a multiple of `multiple` and capped at `cap`."""
    r = next((i + 1 for i, share in enumerate(cumulative) if share >= energy - 1e-12), len(cumulative))
    return min(math.ceil(r / multiple) * multiple, cap)
