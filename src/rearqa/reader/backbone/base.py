"""The contract of a backbone transform.

A transform turns a transformers causal LM into a cheaper one:

    apply(model, calib, cfg) -> model       the weight surgery (or, for an inference-time method,
                                            the modules it installs); `calib` is calibration text
                                            (token-id batches) or None for weight-only methods
    kv_bytes_per_token(config, dtype) -> int   the KV cache one token costs across all layers
    export(model, out_dir, cfg) -> Path     the converted reader on disk in `export_format`, with a
                                            backbone.json naming the transform and its settings
    load(model_dir, dtype) -> model         the inverse of export, used by `load_causal_lm`

`inference_only` transforms (token pruning, say) change how a model runs, not its weights: their
export writes the unchanged weights plus the manifest, and `load` re-installs the modules.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from rearqa.reader.backbone.config import BACKBONE_FILE, TransformConfig
from rearqa.reader.backbone.manifest import BackboneManifest, write_manifest

DTYPE_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.float8_e4m3fn: 1}


def dtype_bytes(dtype: torch.dtype | str) -> int:
    """Bytes per element of `dtype` ("bfloat16" or torch.bfloat16)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r}: KV bytes are known for {[str(d) for d in DTYPE_BYTES]}")
    return DTYPE_BYTES[dtype]


def dense_kv_bytes_per_token(config: Any, dtype: torch.dtype | str) -> int:
    """KV bytes one token costs in an unconverted multi-/grouped-query model: a key and a value of
    head_dim per KV head per layer (SmolLM2-135M in bf16: 2 * 30 * 3 * 64 * 2 = 23,040)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes(dtype)


class BackboneTransform(ABC):
    """One registered transform; subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]  # its key in TRANSFORMS
    config_cls: ClassVar[type[TransformConfig]]  # its typed settings
    export_format: ClassVar[str]  # one of EXPORT_FORMATS
    inference_only: ClassVar[bool] = False  # acts at run time only; weights unchanged
    # file settings (config_cls.file_settings) whose file `export` copies beside the weights:
    # setting -> the copy's name in the reader directory
    setting_copies: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def apply(self, model: torch.nn.Module, calib: Any, cfg: TransformConfig) -> torch.nn.Module:
        ...

    @abstractmethod
    def kv_bytes_per_token(self, config: Any, dtype: torch.dtype | str) -> int:
        ...

    @abstractmethod
    def save_weights(self, model: torch.nn.Module, out_dir: Path, cfg: TransformConfig) -> None:
        """Write the converted model's weights and config in `export_format` to `out_dir`."""

    @abstractmethod
    def load(self, model_dir: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
        ...

    def export_format_for(self, cfg: TransformConfig) -> str:
        """The format `export` writes with these settings (one of EXPORT_FORMATS)."""
        return self.export_format

    def label(self, settings: dict[str, Any]) -> str:
        """A short name for a converted reader with these settings (health, answers, reports)."""
        return self.name

    def export(self, model: torch.nn.Module, out_dir: str | Path, cfg: TransformConfig,
               **manifest: Any) -> Path:
        """`out_dir` with the weights (`save_weights`) and the backbone.json that names them;
        `manifest` adds fields (calibration, source)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.save_weights(model, out_dir, cfg)
        dtype = next(model.parameters()).dtype
        write_manifest(out_dir, BackboneManifest.for_transform(
            self, cfg, kv_bytes_per_token=self.kv_bytes_per_token(model.config, dtype),
            dtype=str(dtype).removeprefix("torch."), **manifest))
        return out_dir / BACKBONE_FILE
