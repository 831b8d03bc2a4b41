"""Reader engines, registered by name and imported lazily.

An engine turns chat messages into text. `hf` runs transformers (training, research, any custom
attention); a vLLM engine joins this registry for serving.
"""
from __future__ import annotations

import importlib
from typing import Any

ENGINES: dict[str, str] = {
    "hf": "rearqa.reader.engines.hf:HFEngine",
}


def get_engine_class(name: str) -> type:
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown reader engine {name!r}; valid engines are {sorted(ENGINES)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_engine(name: str, **kwargs: Any):
    return get_engine_class(name)(**kwargs)
