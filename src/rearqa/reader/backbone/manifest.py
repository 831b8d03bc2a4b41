"""backbone.json: what a converted reader's directory holds, written beside its weights.

It names the transform and its settings, the export format (so an engine can refuse a layout it
cannot run before loading anything) and the KV bytes per token the conversion gives. JSON only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_text, read_json_object
from rearqa.reader.backbone.config import BACKBONE_FILE, EXPORT_FORMATS, TRANSFORMS, VLLM_FORMATS

FORMAT = 1


@dataclass
class BackboneManifest:
    """The contents of backbone.json."""

    transform: str  # the transform's name in TRANSFORMS
    export_format: str  # one of EXPORT_FORMATS
    settings: dict[str, Any] = field(default_factory=dict)  # the transform's config, as plain data
    inference_only: bool = False  # the weights are the original ones; the transform acts at run time
    kv_bytes_per_token: int = 0  # KV cache bytes one token costs, all layers, in `dtype`
    dtype: str = ""  # the dtype the weights were saved in
    calibration: dict[str, Any] = field(default_factory=dict)  # calibration data used (source, size, seed)
    source: dict[str, Any] = field(default_factory=dict)  # what was converted (base, adapter, REAR)
    # a heal adapter merged after the conversion (adapter path, sha256 of its weights); {}: none
    heal: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # the recipe.json rebuilt (`convert --recipe`)
    format: int = FORMAT  # version of this file's layout

    def __post_init__(self) -> None:
        if not isinstance(self.transform, str) or not self.transform:
            raise ConfigError(f"backbone.json: transform={self.transform!r} must name a transform")
        if self.export_format not in EXPORT_FORMATS:
            raise ConfigError(f"backbone.json: export_format={self.export_format!r}; choose one of "
                              f"{list(EXPORT_FORMATS)}")
        if self.format != FORMAT:
            raise ConfigError(f"backbone.json: format {self.format!r}; this rearqa reads format {FORMAT}")

    @classmethod
    def for_transform(cls, transform, cfg, **extra: Any) -> "BackboneManifest":
        return cls(transform=transform.name, export_format=transform.export_format_for(cfg),
                   settings=asdict(cfg), inference_only=transform.inference_only, **extra)

    @property
    def label(self) -> str:
        """A short name of the backbone for /health, answers and reports ("transmla(96+64)",
        "transmla(96+64) healed" with a heal adapter merged)."""
        from rearqa.registry import resolve

        label = resolve(TRANSFORMS, self.transform, "backbone transform", ConfigError)().label(self.settings)
        return f"{label} healed" if self.heal else label

    @property
    def vllm_servable(self) -> bool:
        return self.export_format in VLLM_FORMATS


def write_manifest(model_dir: str | Path, manifest: BackboneManifest) -> Path:
    path = Path(model_dir) / BACKBONE_FILE
    atomic_write_text(path, json.dumps(asdict(manifest), indent=2) + "\n")
    return path


def read_manifest(model_dir: str | Path) -> BackboneManifest | None:
    """The manifest of a converted reader, or None for a plain checkpoint (no backbone.json)."""
    path = Path(model_dir) / BACKBONE_FILE
    if not path.is_file():
        return None
    data = read_json_object(path, "re-export the converted reader")
    known = {f for f in BackboneManifest.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
    try:
        return BackboneManifest(**data)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
