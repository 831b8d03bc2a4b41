"""TransMLA's settings, and the checks that need the model's shape (torch-free).

The shapes follow TransMLA (efficiency-methods.md section 1): a GQA model with `n_kv` KV heads of
`head_dim` has a key/value latent of `n_kv * head_dim` per kind; RoRoPE keeps RoPE on `rope_dim`
of the rotated key dimensions, and the joint PCA of [K_nope; V] keeps `kv_lora_rank` of the
`2 * n_kv * head_dim - rope_dim` that are left, so that is the cap (320 for SmolLM2 with rope 64).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.reader.backbone.config import TransformConfig


@dataclass
class TransMLAConfig(TransformConfig):
    """How a GQA reader is converted to MLA."""

    kv_lora_rank: int = 192  # width of the cached latent per token and layer (after the joint PCA)
    rope_dim: int = 64  # rotary key width per token and layer (qk_rope_head_dim); divides head_dim
    # neighbouring frequencies pooled per RoRoPE rotation: a multiple of head_dim // rope_dim that
    # divides head_dim // 2; 1 (possible with rope_dim == head_dim) commutes with RoPE exactly;
    # 0 takes twice the smallest the rope width allows (2 at rope 64, 4 at rope 32 for SmolLM2),
    # the choice of lowest held-out perplexity in docs/backbone.md
    freqfold: int = 0
    calib_passages: int = 128  # corpus calibration samples (passages joined, cut to calib_tokens)
    calib_tokens: int = 256  # tokens per calibration sample
    balance_kv: bool = True  # scale K_nope against V before the joint PCA (exact; TransMLA's BKV)
    latent_norm: bool = False  # an RMSNorm on the latent, as vLLM's DeepSeek model always has
    pad_v_to: int = 0  # zero-pad value heads to this width at export (a vLLM prefill shape); 0: no
    damping: float = 0.01  # covariance damping (fraction of the mean eigenvalue) in each PCA

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("kv_lora_rank", "rope_dim", "calib_passages", "calib_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"transmla.{name}={value!r}: must be a positive integer")
        if isinstance(self.freqfold, bool) or not isinstance(self.freqfold, int) or self.freqfold < 0:
            raise ConfigError(f"transmla.freqfold={self.freqfold!r}: 0 (the smallest valid) or a "
                              "positive integer")
        if self.rope_dim % 2:
            raise ConfigError(f"transmla.rope_dim={self.rope_dim}: must be even (rotary pairs)")
        if isinstance(self.pad_v_to, bool) or not isinstance(self.pad_v_to, int) or self.pad_v_to < 0:
            raise ConfigError(f"transmla.pad_v_to={self.pad_v_to!r}: 0 (no padding) or a width")
        if not 0 <= self.damping < 1:
            raise ConfigError(f"transmla.damping={self.damping!r}: must be in [0, 1)")

    def check_model(self, config: Any) -> "ModelShape":
        """The model's attention shape, or a ConfigError naming the valid range of each setting."""
        shape = ModelShape.of(config)
        valid_rope = [d for d in range(2, shape.head_dim + 1, 2) if shape.head_dim % d == 0]
        if self.rope_dim not in valid_rope:
            raise ConfigError(f"transmla.rope_dim={self.rope_dim}: a head of {shape.head_dim} takes "
                              f"a rope width that divides it: one of {valid_rope}")
        collapse = shape.head_dim // self.rope_dim
        pairs = shape.head_dim // 2
        folds = [f for f in range(collapse, pairs + 1, collapse) if pairs % f == 0]
        if self.freqfold == 0:
            self.freqfold = 2 * collapse if pairs % (2 * collapse) == 0 else collapse
        if self.freqfold not in folds:
            raise ConfigError(f"transmla.freqfold={self.freqfold}: with rope_dim {self.rope_dim} "
                              f"it must be a multiple of {collapse} that divides {pairs}: one of {folds}")
        cap = shape.rank_cap(self.rope_dim)
        if not 1 <= self.kv_lora_rank <= cap:
            raise ConfigError(f"transmla.kv_lora_rank={self.kv_lora_rank}: with rope_dim "
                              f"{self.rope_dim} this model takes 1..{cap} (2 * {shape.kv_heads} KV "
                              f"heads * {shape.head_dim} - {self.rope_dim})")
        if self.pad_v_to and self.pad_v_to < shape.head_dim:
            raise ConfigError(f"transmla.pad_v_to={self.pad_v_to}: must be 0 or at least the value "
                              f"head width {shape.head_dim}")
        return shape


@dataclass(frozen=True)
class ModelShape:
    """The attention shape of a Llama-style GQA model."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int

    @classmethod
    def of(cls, config: Any) -> "ModelShape":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, heads, kv_heads, head_dim, config.hidden_size)

    @property
    def latent(self) -> int:
        """Width of the keys (or values) of all KV heads together: 192 for SmolLM2."""
        return self.kv_heads * self.head_dim

    def rank_cap(self, rope_dim: int) -> int:
        return 2 * self.latent - rope_dim
