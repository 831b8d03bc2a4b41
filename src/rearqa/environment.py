"""The process environment rearqa runs in: no model hub, and where the source tree is.

Models and data are read from local folders only (../shared/ASSETS.md); code that reaches a hub at
run time is a bug, so every entry point sets the hub switches before transformers is imported.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HUB_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def set_offline_defaults() -> None:
    """Hub off and no tokenizer thread pools, unless the caller's environment says otherwise."""
    for name in HUB_SWITCHES:
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def offline_hub() -> Iterator[None]:
    """The hub switched off for the block, whatever the environment says; restored after."""
    saved = {k: os.environ.get(k) for k in HUB_SWITCHES}
    os.environ.update({k: "1" for k in HUB_SWITCHES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def repo_root() -> Path:
    """The source checkout this package runs from (src layout: <root>/src/rearqa)."""
    return Path(__file__).resolve().parents[2]
