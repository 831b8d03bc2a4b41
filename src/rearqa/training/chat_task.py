"""What a baseline run trains: the plain model, LoRA, LM loss on the answer alone.

The baselines fine-tune the base model with REAR's LoRA recipe on the same questions and answer
targets, with the plain chat prompt of rearqa.reader.prompts: rag-ft with the dense top-`rag_k`
passages in it (`RagTask`), closed-book-ft with none (`ClosedBookTask`). They train until they
have seen a REAR run's training-token count (rearqa.training.rear_task.rear_token_count).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from rearqa.training.config import TrainConfig
from rearqa.training.data import (ChatExample, closed_book_examples, encode_chat_example, pad_id,
                                  rag_examples)
from rearqa.training.data.token_rows import StepRows, TokenRows, collate_chunks
from rearqa.training.losses import chunked_lm_loss


class ChatLMTask:
    """The chat prompt of `examples`, LM loss on the answer alone; a subclass per baseline."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, lm, device: torch.device) -> None:
        from rearqa.reader.adapters import wrap

        examples = self.examples(config, snapshot)
        started = time.perf_counter()  # tokenised once; a batch only collates (data.token_rows)
        encoded = [encode_chat_example(tokenizer, ex, config.max_answer_tokens) for ex in examples]
        self.rows = TokenRows.from_lists([ids for ids, _ in encoded], [mask for _, mask in encoded])
        self.tokenise_seconds = time.perf_counter() - started
        self.config = config
        self.pad_token_id = pad_id(tokenizer)
        lengths = self.lengths()
        self.stats = {"questions": len(examples), "mean_tokens": sum(lengths) / max(1, len(lengths)),
                      "max_tokens": max(lengths, default=0)}
        self.model = wrap(config.adapter, lm, config.adapter_settings()).to(device)
        self.tokenizer = tokenizer
        self.no_decay_names: list[str] = []
        self.n_items = len(examples)
        self.items_per_micro = config.batch * config.group_size  # as many sequences as rear
        self.item_ids = [ex.id for ex in examples]

    @staticmethod
    def examples(config: TrainConfig, snapshot) -> list[ChatExample]:
        """The method's training examples, one per question."""
        raise NotImplementedError

    def lengths(self) -> list[int]:
        return self.rows.lengths

    def batch(self, indices: list[int], device: torch.device) -> StepRows:
        return collate_chunks(self.rows, list(indices), self.config.row_chunks, self.pad_token_id,
                              device)

    def losses(self, batch: StepRows, stage: str) -> dict:
        lm = chunked_lm_loss(self.model.get_base_model(), batch)  # the LM with LoRA layers in it
        return {"loss": lm, "lm": lm, "rank": lm.new_zeros(())}

    def save_model(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


class RagTask(ChatLMTask):
    """rag-ft: the dense top-`rag_k` passages in the prompt, cut as the readers cut them."""

    @staticmethod
    def examples(config: TrainConfig, snapshot) -> list[ChatExample]:
        return rag_examples(snapshot, config.splits, k=config.rag_k, depth=config.depth,
                            max_questions=config.max_questions or None, prompt=config.prompt,
                            max_passage_words=config.max_passage_words)


class ClosedBookTask(ChatLMTask):
    """closed-book-ft: the question alone in the prompt."""

    @staticmethod
    def examples(config: TrainConfig, snapshot) -> list[ChatExample]:
        return closed_book_examples(snapshot, config.splits, depth=config.depth,
                                    max_questions=config.max_questions or None,
                                    prompt=config.prompt)
