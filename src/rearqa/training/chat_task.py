"""What a baseline run trains: the plain model, LoRA, LM loss on the answer alone.

The baselines fine-tune the base model with REAR's LoRA recipe on the same questions and answer
targets, with the plain chat prompt of rearqa.reader.prompts: rag-ft with the dense top-`rag_k`
passages in it (`RagTask`), closed-book-ft with none (`ClosedBookTask`). They train until they
have seen a REAR run's training-token count (rearqa.training.rear_task.rear_token_count).
"""
from __future__ import annotations

from pathlib import Path

import torch

from rearqa.training.config import TrainConfig
from rearqa.training.data import (ChatExample, chat_batch, closed_book_examples,
                                  encode_chat_example, pad_id, rag_examples)
from rearqa.training.losses import lm_loss_at_labels


class ChatLMTask:
    """The chat prompt of `examples`, LM loss on the answer alone; a subclass per baseline."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, lm, device: torch.device) -> None:
        from rearqa.reader.adapters import wrap
        from rearqa.reader.adapters.lora.config import LoraSettings

        examples = self.examples(config, snapshot)
        self.encoded = [encode_chat_example(tokenizer, ex, config.max_answer_tokens)
                        for ex in examples]
        lengths = self.lengths()
        self.stats = {"questions": len(examples), "mean_tokens": sum(lengths) / max(1, len(lengths)),
                      "max_tokens": max(lengths, default=0)}
        lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        self.model = wrap("lora", lm, lora).to(device)
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
        return [len(ids) for ids, _ in self.encoded]

    def batch(self, indices: list[int], device: torch.device) -> dict:
        batch = chat_batch([self.encoded[i] for i in indices], pad_id(self.tokenizer))
        return {k: v.to(device) for k, v in batch.items()}

    def losses(self, batch: dict, stage: str) -> dict:
        lm_model = self.model.get_base_model()  # the causal LM with the LoRA layers in it
        hidden = lm_model.get_decoder()(input_ids=batch["input_ids"],
                                        attention_mask=batch["attention_mask"]).last_hidden_state
        lm = lm_loss_at_labels(hidden, lm_model.get_output_embeddings(), batch["labels"])
        return {"loss": lm, "lm": lm, "rank": torch.zeros(())}

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
