"""Reader engines, registered by name and imported lazily.

An engine turns chat messages into text. `hf` runs transformers (training, research, any custom
attention); `vllm` runs an in-process vLLM (serving and batch throughput). The REAR reader picks
its engine from the same `reader.engine` setting (rearqa.reader.rear.reader.REAR_ENGINES).
"""
from __future__ import annotations

from typing import Any

from rearqa.registry import resolve

ENGINES: dict[str, str] = {
    "hf": "rearqa.reader.engines.hf:HFEngine",
    "vllm": "rearqa.reader.engines.vllm_engine:VllmEngine",
}


def get_engine_class(name: str) -> type:
    return resolve(ENGINES, name, "reader engine")


def build_engine(name: str, **kwargs: Any):
    return get_engine_class(name)(**kwargs)
