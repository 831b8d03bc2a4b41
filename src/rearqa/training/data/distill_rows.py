"""A distill run's sequences, tokenised once: corpus windows and rag-ft chat prompts.

The student learns the teacher's next-token distribution at every position, so any text the
reader will see serves; two kinds are mixed (`distill_data`):

    corpus   passage text cut into windows of `max_len` tokens: the passages the train splits'
             rankings name (dense and BM25 top-`depth`), in a seeded order, joined with eos
             between passages. Passages ranked only for dev-select or test questions are left
             out, so no held-out question steers what the student sees.
    prompts  the rag-ft chat prompts of the `*-dev-train` questions (question + dense top-k
             passages + the gold answer as the assistant turn), as RagTask builds them, cut to
             `max_len` tokens. A REAR student reads REAR inputs instead, built as REAR training
             builds them (the caller passes that builder: rearqa.training.distill_rear).

Every token but a row's first carries the loss (label mask True): collate_chunks then gives
the index of every position that predicts a token of its row. Each kind is its own TokenRows,
since only REAR inputs have score positions.
"""
from __future__ import annotations

import random

from rearqa.config_errors import ConfigError
from rearqa.training.data.chat_examples import encode_chat_example, rag_examples
from rearqa.training.data.groups import train_rows
from rearqa.training.data.token_rows import TokenRows


def train_passage_ids(snapshot, splits: list[str], depth: int,
                      max_questions: int | None = None) -> list[str]:
    """Ids of the passages the train splits' dense and BM25 top-`depth` name, first seen first."""
    seen: dict[str, None] = {}
    for _, row in train_rows(snapshot, splits, max_questions):
        for ranker in ("dense", "bm25"):
            for pid, _ in row["rankings"].get(ranker, [])[:depth]:
                seen.setdefault(pid, None)
    return list(seen)


def corpus_windows(snapshot, tokenizer, splits: list[str], depth: int, max_len: int,
                   windows: int, seed: int = 0) -> tuple[TokenRows, list[str]]:
    """Up to `windows` windows of `max_len` tokens of train-split passages, and their ids
    ("corpus:<first passage id>:<n>"). A last partial window of >= 2 tokens is kept."""
    ids = train_passage_ids(snapshot, splits, depth)
    random.Random(f"{seed}:corpus").shuffle(ids)
    eos = tokenizer.eos_token_id
    rows, names, stream, first = [], [], [], None
    for pid in ids:
        if len(rows) >= windows:
            break
        p = snapshot.passages[pid]
        text = f"{p.get('title', '')}\n{p['text']}".strip()
        first = first or pid
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        while len(stream) >= max_len and len(rows) < windows:
            rows.append(stream[:max_len])
            names.append(f"corpus:{first}:{len(rows)}")
            stream, first = stream[max_len:], None
    if len(rows) < windows and len(stream) >= 2:
        rows.append(stream)
        names.append(f"corpus:{first}:{len(rows)}")
    return TokenRows.from_lists(rows, [[True] * len(r) for r in rows]), names


def prompt_rows(snapshot, tokenizer, config) -> tuple[TokenRows, list[str]]:
    """The rag-ft prompts of the train splits (gold answer as the assistant turn), cut to
    `config.distill_max_len` tokens, and their question ids."""
    examples = rag_examples(snapshot, config.splits, k=config.rag_k, depth=config.depth,
                            max_questions=config.max_questions or None, prompt=config.prompt,
                            max_passage_words=config.max_passage_words)
    rows = [encode_chat_example(tokenizer, ex, config.max_answer_tokens)[0][:config.distill_max_len]
            for ex in examples]
    return (TokenRows.from_lists(rows, [[True] * len(r) for r in rows]),
            [f"prompt:{ex.id}" for ex in examples])


def distill_rows(snapshot, tokenizer, config, prompts=prompt_rows
                 ) -> tuple[list[TokenRows], list[str]]:
    """The rows of every kind in `config.distill_data`, one TokenRows per kind in that order
    (kinds without rows left out), and all their ids in the same order; `prompts(snapshot,
    tokenizer, config)` builds the prompt rows."""
    parts, names = [], []
    for kind in config.distill_data:
        if kind == "corpus":
            rows, ids = corpus_windows(snapshot, tokenizer, config.splits, config.depth,
                                       config.distill_max_len, config.corpus_windows, config.seed)
        else:  # "prompts" (TrainConfig checks the names)
            rows, ids = prompts(snapshot, tokenizer, config)
        if len(rows):
            parts.append(rows)
            names += ids
    if not parts:
        raise ConfigError(f"distill_data={config.distill_data}: no rows (no passages or questions "
                         f"in {config.splits}, or corpus_windows=0)")
    return parts, names
