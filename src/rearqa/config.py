"""Typed settings of the whole pipeline, filled from YAML files or keywords.

Each component owns a dataclass next to its code (`RetrieverConfig` in `retriever/config.py`,
`ReaderConfig` in `reader/config.py`); `PipelineConfig` composes them. The machinery that fills
dataclasses from YAML lives in `rearqa.config_base`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rearqa.config_base import ConfigError, from_dict, read_yaml, to_dict
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig

__all__ = ["ConfigError", "PipelineConfig", "from_dict", "read_yaml", "to_dict"]


@dataclass
class PipelineConfig:
    """Settings of the whole question -> retriever -> reader pipeline."""

    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)  # how passages are found
    reader: ReaderConfig = field(default_factory=ReaderConfig)  # how answers are produced
    k: int = 5  # passages retrieved per question
    seed: int = 0  # seed for anything random (sampling, bootstrap)

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k={self.k!r}: must be a positive integer, e.g. k: 5")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        return from_dict(cls, read_yaml(path), where=Path(path).name)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
