"""REAR training: losses (LM + bi-granularity rank), and later data, loops and adapters."""

# Exports, imported on first use so that `import rearqa.training.losses` stays light:
#     from rearqa.training import TrainConfig, train
#     train(TrainConfig(method="rear", snapshot="build/bundle", out="runs/rear"))
from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainConfig": "rearqa.training.config",
    "ConfigMismatchError": "rearqa.training.config",
    "TrainGroup": "rearqa.training.data",
    "build_groups": "rearqa.training.data",
    "generation_examples": "rearqa.training.data",
    "rag_examples": "rearqa.training.data",
    "closed_book_examples": "rearqa.training.data",
    "group_stats": "rearqa.training.data",
    "train": "rearqa.training.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rearqa.training' has no attribute {name!r}")
