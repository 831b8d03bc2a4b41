"""The process environment rearqa runs in: no model hub, where the source tree and the data home are.

Models and data are read from local folders only (../shared/ASSETS.md); code that reaches a hub at
run time is a bug, so every entry point sets the hub switches before transformers is imported.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rearqa.config_errors import ConfigError

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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str | None = None) -> str:
    """Log lines on stderr at `level` (default: $REARQA_LOG, else WARNING); returns the level.

    Quiet by default: libraries' INFO lines (faiss's loader trying AVX512 first, the embedder and
    model loading) and transformers' weight-loading bars show only at INFO or below; warnings and
    errors always do. rearqa's own progress bars (building an index) are not log lines and stay.
    The progress-bar switch must be set before transformers is imported, so call this first."""
    name = (level or os.environ.get("REARQA_LOG") or "WARNING").upper()
    if name not in LOG_LEVELS:
        raise ConfigError(f"log level {name!r}: choose one of {list(LOG_LEVELS)}")
    logging.basicConfig(level=name, format="%(levelname)s %(name)s: %(message)s", force=True)
    if logging.getLevelName(name) > logging.INFO:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return name


def data_home() -> Path:
    """$REARQA_HOME or ~/.cache/rearqa, created on demand: where models, data and derived files
    (the reader's vLLM adapter exports) live. `rearqa.assets.home()` is this."""
    path = Path(os.environ.get("REARQA_HOME") or Path.home() / ".cache" / "rearqa").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The source checkout this package runs from (src layout: <root>/src/rearqa)."""
    return Path(__file__).resolve().parents[2]
