"""The order the reader sees its top-k passages in: retrieval order, reversed, or shuffled.

Issue 14 asks how much a reader's answers depend on passage order (the head-composition paper,
Merullo et al. 2024, ties the channels between heads to a model's sensitivity to the order of items
in its prompt). A standard RAG reader reads all k passages in one prompt, so their order can
matter; REAR reads each passage alone, so for it only the order of ties can.

    retrieval    as the retriever ranked them (the default; best first)
    reversed     best last, nearest the question
    shuffled:S   a random permutation, seeded by S and the question's id (the same question gets
                 the same permutation in every run, another seed another one)

Torch-free.
"""
from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

from rearqa.config_errors import ConfigError

ORDERS = ("retrieval", "reversed", "shuffled")
T = TypeVar("T")


def parse_order(text: str) -> tuple[str, int]:
    """"retrieval" -> ("retrieval", 0); "shuffled:2" -> ("shuffled", 2); a clear error else."""
    kind, sep, seed = str(text).partition(":")
    if kind not in ORDERS or (kind != "shuffled" and sep) or (kind == "shuffled" and not seed.isdigit()):
        raise ConfigError(f"passage order {text!r}: one of retrieval, reversed, shuffled:SEED "
                          "(e.g. shuffled:0)")
    return kind, int(seed) if seed else 0


def reorder(passages: Sequence[T], order: str, question_id: str) -> list[T]:
    """`passages` (in retrieval order) in the order `order` names, for question `question_id`."""
    kind, seed = parse_order(order)
    items = list(passages)
    if kind == "reversed":
        return items[::-1]
    if kind == "shuffled":
        digest = hashlib.sha256(f"{seed}:{question_id}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(items)
    return items
