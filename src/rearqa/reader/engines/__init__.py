"""Reader engines, registered by name and imported lazily.

An engine turns chat messages into text. `hf` runs transformers (training, research, any custom
attention); a vLLM engine joins this registry for serving.
"""
from __future__ import annotations

from typing import Any

from rearqa.registry import resolve

ENGINES: dict[str, str] = {
    "hf": "rearqa.reader.engines.hf:HFEngine",
}


def get_engine_class(name: str) -> type:
    return resolve(ENGINES, name, "reader engine")


def build_engine(name: str, **kwargs: Any):
    return get_engine_class(name)(**kwargs)
