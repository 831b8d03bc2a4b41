"""Training micro-batches: tokenised examples collated into right-padded tensors.

A REAR micro-batch holds every passage of B groups (B x group_size rows) with the graded labels
and group ids the rank loss needs; a baseline micro-batch holds encoded chat examples with
labels only on the answer.
"""
from __future__ import annotations

from rearqa.training.data.groups import TrainGroup
from rearqa.training.data.rear_examples import rear_inputs


def rear_batch(groups: list[TrainGroup], tokenizer, *, use_chat_template: bool,
               noise_ratio: float = 1.0, max_passage_words: int = 150,
               max_passage_tokens: int | None = 200,
               max_question_tokens: int | None = 64,
               max_answer_tokens: int | None = 15, judgment_loss: str = "positives",
               question_first: bool = False) -> dict:
    """One REAR micro-batch, right-padded: the collated inputs of every passage of every group
    (B x group_size rows) plus `grades` (N,) and `group_ids` (N,) for the rank loss."""
    import torch

    from rearqa.reader.rear.inputs import collate_rear_inputs

    inputs, grades, group_ids = [], [], []
    for g, group in enumerate(groups):
        inputs += rear_inputs(group, tokenizer, use_chat_template=use_chat_template,
                              noise_ratio=noise_ratio, max_passage_words=max_passage_words,
                              max_passage_tokens=max_passage_tokens,
                              max_question_tokens=max_question_tokens,
                              max_answer_tokens=max_answer_tokens, judgment_loss=judgment_loss,
                              question_first=question_first)
        grades += [p.grade for p in group.passages]
        group_ids += [g] * len(group.passages)
    batch = collate_rear_inputs(inputs, pad_id(tokenizer), padding_side="right")
    batch["grades"] = torch.tensor(grades, dtype=torch.float32)
    batch["group_ids"] = torch.tensor(group_ids)
    return batch


def chat_batch(encoded: list[tuple[list[int], list[bool]]], pad_token_id: int) -> dict:
    """Right-padded input_ids, attention_mask and labels (-100 off the answer) of chat examples."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for ids, mask in encoded:
        pad = width - len(ids)
        rows["input_ids"].append(ids + [pad_token_id] * pad)
        rows["attention_mask"].append([1] * len(ids) + [0] * pad)
        rows["labels"].append([t if m else -100 for t, m in zip(ids, mask)] + [-100] * pad)
    return {k: torch.tensor(v) for k, v in rows.items()}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
