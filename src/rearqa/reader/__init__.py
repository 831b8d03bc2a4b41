"""Readers turn a question and its passages into an `Answer`.

One reader class per family, registered by method name in `rearqa.reader.config.READERS`:
`BaselineReader` (closed-book, standard RAG), `FinetunedReader` (the same prompts over a LoRA
fine-tuned base: rag-ft, closed-book-ft) and `RearReader` (rank head, judgment tokens, routing).
All offer the `Reader` seam of `rearqa.reader.base` (read_batch; stream yields the text pieces, then
the Answer). The REAR and fine-tuned readers are imported lazily (they pull in torch and peft).
"""
from __future__ import annotations

from pathlib import Path

from rearqa.reader.base import QuestionError, Reader, check_question
from rearqa.reader.baseline import BaselineReader
from rearqa.reader.config import INFERENCE_BACKBONE_METHODS, READERS, TPLA_METHODS, ReaderConfig
from rearqa.registry import lazy_attributes, resolve

__all__ = ["BaselineReader", "FinetunedReader", "QuestionError", "READERS", "Reader", "ReaderConfig",
           "RearReader", "build_reader", "check_question", "get_reader_class"]

_LAZY = {"RearReader": READERS["rear"], "FinetunedReader": READERS["rag-ft"]}


def get_reader_class(method: str) -> type:
    """The reader class registered for `method`."""
    return resolve(READERS, method, "reader method")


def build_reader(method: str, config: ReaderConfig, base_model_dir: str | Path):
    """A reader for `method`: `cls.from_config(config, base_model_dir)` where the class has one,
    else `cls(config, base_model_dir)` (BaselineReader's constructor)."""
    cls = get_reader_class(method)
    if config.tp_shards and method not in TPLA_METHODS:
        from rearqa.config_errors import ConfigError

        raise ConfigError(f"reader.tp_shards={config.tp_shards}: TPLA decode is wired into the readers "
                          f"of {list(TPLA_METHODS)}, not {method!r}; set reader.tp_shards: 0")
    if config.backbone and method not in INFERENCE_BACKBONE_METHODS:
        from rearqa.config_errors import ConfigError

        raise ConfigError(f"reader.backbone={config.backbone!r} is wired into the readers of "
                          f"{list(INFERENCE_BACKBONE_METHODS)}, not {method!r}; set reader.backbone: \"\"")
    factory = getattr(cls, "from_config", cls)
    return factory(config, base_model_dir)

__getattr__ = lazy_attributes(__name__, _LAZY)
