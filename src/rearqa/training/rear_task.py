"""What a REAR run trains: one model that judges and answers, from groups of passages.

REAR (Wang et al., 2024; shared/papers/REAR-and-RAG-toolkits.md) trains one LLM to judge and to
answer. A step takes B question groups (rearqa.training.data) and runs ONE forward pass over
their B x group_size REAR inputs `{passage}<BEGIN_QUERY>{question}<GENERATE_SCORE>[judgment
answer]`: the rank logits are read at <GENERATE_SCORE> and the LM loss on the answers comes from
the same pass. Loss = LM + beta * rank, where rank is pointwise BCE in the warm-up stage (REAR's
stage 1) and the bi-granularity loss afterwards (stage 2).

Every group's REAR inputs are tokenised once, when the task is built (`rear_token_rows`, through
`rear_inputs`); a micro-batch only collates them, in `row_chunks` length-sorted chunks
(rearqa.training.data.token_rows), and the losses are taken once over all its rows
(rearqa.training.losses.rear_chunked_lm_and_rank): the same losses as one padded batch.

`rear_token_count` counts a run's training tokens from the data and the tokenizer alone: the
budget the baselines (rearqa.training.chat_task) are given.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig
from rearqa.training.data import build_groups, group_stats, pad_id, rear_inputs
from rearqa.training.data.token_rows import StepRows, TokenRows, collate_chunks, to_device
from rearqa.training.losses import (RearLossConfig, causal_hidden, compute_rear_loss,
                                   rear_chunked_lm_and_rank, rows_at)
from rearqa.training.schedule import MAIN_STAGE, WARMUP_STAGE, DataOrder


def rear_groups(config: TrainConfig, snapshot) -> list:
    """The REAR training groups of `config` (rearqa.training.data.build_groups)."""
    return build_groups(snapshot, config.splits, config.group_size, config.depth, config.seed,
                        config.max_questions or None, config.agree_top, config.unanswered_share,
                        config.negative_samplings)


def rear_input_options(config: TrainConfig) -> dict:
    """How `config` turns a group into REAR inputs (rear_inputs / rear_batch keywords)."""
    return dict(use_chat_template=config.chat_template, noise_ratio=config.noise_ratio,
                judgment_loss=config.judgment_loss, question_first=config.question_first,
                max_passage_words=config.max_passage_words,
                max_passage_tokens=config.max_passage_tokens,
                max_question_tokens=config.max_question_tokens,
                max_answer_tokens=config.max_answer_tokens)


def rear_token_rows(groups: list, tokenizer, config: TrainConfig,
                    passage_masks: bool = True) -> TokenRows:
    """The REAR input of every passage of every group, tokenised once, groups in order;
    `passage_masks`: keep the passage masks (only the lowrank_attn head reads them)."""
    parts = []
    for group in groups:
        inputs = rear_inputs(group, tokenizer, **rear_input_options(config))
        parts.append(TokenRows.from_lists(
            [x.input_ids for x in inputs], [x.label_mask for x in inputs],
            [x.passage_mask for x in inputs] if passage_masks else None,
            [x.score_position for x in inputs]))
    return TokenRows.concat(parts)


def rear_token_count(config: TrainConfig, steps: list[int] | None = None) -> dict[int, int]:
    """Training tokens a rear run of `config` will have seen after each of `steps` (default:
    its last step), computed from the data and the tokenizer alone (no model), in the run's own
    data order: the budget that the baselines (rag-ft, closed-book-ft) are given so they can
    train side by side with it."""
    from transformers import AutoTokenizer

    from rearqa.eval.bundle import Snapshot
    from rearqa.reader.rear.tokens import add_rear_tokens

    if config.method != "rear":
        raise ConfigError("rear_token_count counts a rear run's tokens")
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_dir())
    add_rear_tokens(tokenizer)
    groups = rear_groups(config, Snapshot(config.snapshot))
    rows, lengths, start = rear_token_rows(groups, tokenizer, config, passage_masks=False), [], 0
    for group in groups:
        lengths.append(sum(rows.lengths[start:start + len(group.passages)]))
        start += len(group.passages)
    order, per_step = DataOrder(len(groups), config.seed), config.batch * config.grad_accum
    wanted = sorted(set(steps or [config.total_steps]))
    counts, tokens = {}, 0
    for step in range(1, wanted[-1] + 1):
        tokens += sum(lengths[i] for i in order.take((step - 1) * per_step, per_step))
        if step in wanted:
            counts[step] = tokens
    return counts


class RearTask:
    """REAR: groups of passages per question, one forward pass for rank and LM losses."""

    def __init__(self, config: TrainConfig, snapshot, tokenizer, lm, device: torch.device) -> None:
        from rearqa.reader.rear import RearConfig, RearModel, add_lora
        from rearqa.reader.rear.lora import no_decay_parameter_names

        self.config = config
        self.groups = rear_groups(config, snapshot)
        self.stats = group_stats(self.groups, config.noise_ratio)
        rear = RearConfig(head=config.rear_head, use_chat_template=config.chat_template,
                          question_first=config.question_first)
        model = RearModel.from_base(lm, tokenizer, rear, base_model_dir=config.base_model_dir())
        self.model = add_lora(model, method=config.adapter, settings=config.adapter_settings()).to(device)
        self.tokenizer = tokenizer
        self.no_decay_names = no_decay_parameter_names(self.model)
        self.n_items, self.items_per_micro = len(self.groups), config.batch
        self.item_ids = [g.id for g in self.groups]
        # After from_base: the REAR tokens are in the tokenizer now.
        started = time.perf_counter()
        self.rows = rear_token_rows(self.groups, tokenizer, config,
                                    passage_masks=self.model.rank_head is not None)
        self.tokenise_seconds = time.perf_counter() - started
        starts = [0]
        for group in self.groups:
            starts.append(starts[-1] + len(group.passages))
        self.group_rows = [range(a, b) for a, b in zip(starts, starts[1:])]
        self.pad_token_id = pad_id(tokenizer)
        self.suppressed = torch.tensor(self.model.suppressed_token_ids(), device=device)
        self.head_names: list[str] = []  # the linear head's own parameters (extra_param_groups)
        if config.head_lr:
            self._attach_linear_head(device)

    def extra_param_groups(self, config: TrainConfig) -> list[dict]:
        """The linear head's own AdamW group: its learning rate, no weight decay."""
        if not self.head_names:
            return []
        return [{"names": self.head_names, "lr": config.head_lr, "weight_decay": 0.0}]

    def lengths(self) -> list[int]:
        """Tokens per group (all its passages' inputs)."""
        return [sum(self.rows.lengths[r] for r in rows) for rows in self.group_rows]

    def _attach_linear_head(self, device: torch.device) -> None:
        """The linear head as its own fp32 parameters: weight 0 and the bias at the base-rate
        logit of the training passages (so the first steps learn the weight, not the offset);
        centred on the score-position states of the first groups when head_center."""
        center = self._score_state_mean(device) if self.config.head_center else None
        head = self.model.attach_linear_head(center)
        labels = [p.has_answer for g in self.groups for p in g.passages]
        share = min(max(sum(labels) / max(1, len(labels)), 1e-3), 1 - 1e-3)
        with torch.no_grad():
            head.bias.fill_(math.log(share / (1 - share)) + float(head.bias))
        self.head_names = [n for n, p in self.model.named_parameters()
                           if p.requires_grad and n.startswith("linear_head.")]

    @torch.no_grad()
    def _score_state_mean(self, device: torch.device, groups: int = 64) -> torch.Tensor:
        """Mean final hidden state at <GENERATE_SCORE> over the rows of the first `groups` groups
        (index order, so a resumed run recomputes the same centre)."""
        step = self.batch(list(range(min(groups, len(self.groups)))), device)
        dtype = self.model.causal_lm.get_input_embeddings().weight.dtype
        states = []
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for chunk in step.chunks:
                states.append(rows_at(causal_hidden(self.model.causal_lm, chunk.input_ids),
                                      chunk.score_index))
        return torch.cat(states).float().mean(dim=0)

    def batch(self, indices: list[int], device: torch.device) -> StepRows:
        rows = [r for i in indices for r in self.group_rows[i]]
        step = collate_chunks(self.rows, rows, self.config.row_chunks, self.pad_token_id, device)
        groups = [self.groups[i] for i in indices]
        grades = torch.tensor([p.grade for g in groups for p in g.passages], dtype=torch.float32)
        group_ids = torch.tensor([k for k, g in enumerate(groups) for _ in g.passages])
        step.extra = {"grades": to_device(grades, device), "group_ids": to_device(group_ids, device)}
        return step

    def losses(self, batch: StepRows, stage: str) -> dict:
        c = self.config
        lm, rank = rear_chunked_lm_and_rank(self.model, batch, self.suppressed)
        rank_only = c.warmup_rank_only and stage == WARMUP_STAGE
        loss_config = RearLossConfig(beta=c.beta, fine=stage == MAIN_STAGE, bce_weight=c.bce_weight,
                                     minor_diff=c.minor_diff, neg_weight=c.neg_weight,
                                     positive_pair_weight=c.positive_pair_weight,
                                     lm_weight=0.0 if rank_only else 1.0)
        return compute_rear_loss(None, None, rank, batch.extra["grades"], batch.extra["group_ids"],
                                 loss_config, lm=lm)

    def save_model(self, path: Path) -> None:
        self.model.save_pretrained(path)
