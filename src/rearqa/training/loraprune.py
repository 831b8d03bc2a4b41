"""LoRAPrune's fine-tuning: a LoRA trained while group importance accumulates and the cubic
schedule masks the least important groups (reader/backbone/loraprune says the method).

`Pruner` is what a training loop calls: `after_backward()` once per optimiser step, after the
gradients of the step are complete and before they are zeroed (it reads the LoRA gradients into
the running importance), and `after_step(step)` after the optimiser step (on a pruning step it
chooses the mask the schedule asks for and installs it as input gates on o_proj and down_proj, so
later steps train the pruned model). `finetune_and_prune` is a plain loop over token batches that
drives it; `merge_and_prune` turns the trained LoRA model and the final mask into the servable
pruned Llama. The mask is saved (PruneMask.save) so `rearqa convert --transform loraprune --mask`
rebuilds the checkpoint on the CPU.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import torch

from rearqa.files import atomic_write_text
from rearqa.reader.backbone.loraprune.config import LoRAPruneConfig, PruneShape
from rearqa.reader.backbone.loraprune.groups import lora_importance
from rearqa.reader.backbone.loraprune.mask import (ImportanceTracker, PruneMask, cubic_sparsity,
                                                   install_mask, kept_at, select_mask)
from rearqa.reader.backbone.loraprune.prune import prune_model


@dataclass
class PruneEvent:
    """One pruning step: what the schedule kept."""

    step: int
    kv_groups: int  # KV groups kept per layer after this step
    mlp_channels: int  # MLP channels kept per layer after this step


@dataclass
class Pruner:
    """The running importance, the schedule and the current mask of one LoRAPrune run over
    `total_steps` optimiser steps of the PEFT LoRA `model`."""

    model: torch.nn.Module
    cfg: LoRAPruneConfig
    total_steps: int
    shape: PruneShape = field(init=False)
    tracker: ImportanceTracker = field(init=False)
    mask: PruneMask = field(init=False)
    events: list[PruneEvent] = field(default_factory=list)
    _handles: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.shape = self.cfg.check_targets(self.model.config)
        self.tracker = ImportanceTracker(self.cfg.ema)
        self.mask = PruneMask.full(self.shape)

    @property
    def start(self) -> int:
        return int(self.cfg.prune_start * self.total_steps)

    @property
    def end(self) -> int:
        """The step by which the target is reached (at least one step after `start`)."""
        return max(self.start + 1, int(self.cfg.prune_end * self.total_steps))

    def is_prune_step(self, step: int) -> bool:
        """Steps count from 1; pruning runs every prune_every steps in (start, end], and at end."""
        return self.start < step <= self.end and (step % self.cfg.prune_every == 0 or step == self.end)

    def after_backward(self) -> None:
        self.tracker.update(lora_importance(self.model, self.shape))

    def after_step(self, step: int) -> PruneEvent | None:
        """Prune to the schedule's counts when `step` is a pruning step; the event, else None."""
        if not self.is_prune_step(step) or self.tracker.scores is None:
            return None
        progress = cubic_sparsity(step, self.start, self.end, 1.0)
        kv = kept_at(progress, self.shape.kv_heads, self.cfg.kv_groups)
        mlp = kept_at(progress, self.shape.intermediate, self.cfg.mlp_channels)
        self.mask = select_mask(self.tracker.scores, kv, mlp, previous=self.mask)
        for handle in self._handles:
            handle.remove()
        self._handles = install_mask(self.model, self.mask, self.shape)
        event = PruneEvent(step, kv, mlp)
        self.events.append(event)
        return event

    def save(self, out: str | Path) -> Path:
        """`out`/mask.json (what `rearqa convert --mask` reads) and `out`/importance.json (the
        pruning events and the final running importance per layer and group); returns the mask."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        scores = self.tracker.scores
        report = {"events": [asdict(e) for e in self.events], "total_steps": self.total_steps,
                  "attn": scores.attn.tolist() if scores else None,
                  "mlp": scores.mlp.tolist() if scores else None}
        atomic_write_text(out / "importance.json", json.dumps(report) + "\n")
        return self.mask.save(out / "mask.json")

    def lift_mask(self) -> None:
        """Remove the input gates (before merging: the pruned model needs none)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def finetune_and_prune(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                       cfg: LoRAPruneConfig, total_steps: int, lr: float = 1e-4
                       ) -> Iterator[tuple[int, float, PruneEvent | None] | Pruner]:
    """Fine-tune the PEFT LoRA `model` on `batches` (input_ids, attention_mask, labels; one per
    step, `total_steps` of them) with AdamW, pruning on the schedule. Yields (step, loss, event)
    per step, then the finished Pruner (its mask reaches the targets at `cfg.prune_end`)."""
    pruner = Pruner(model, cfg, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    step = 0
    for step, batch in enumerate(batches, start=1):
        if step > total_steps:
            break
        loss = model(**batch).loss
        loss.backward()
        pruner.after_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        yield step, loss.item(), pruner.after_step(step)
    if step < pruner.end:
        raise ValueError(f"{step} batches ran out before the schedule's last pruning step "
                         f"{pruner.end} of {total_steps}; give {total_steps} batches")
    model.eval()
    pruner.lift_mask()
    yield pruner


def merge_and_prune(model: torch.nn.Module, mask: PruneMask) -> torch.nn.Module:
    """The PEFT LoRA `model` merged into its base and sliced to `mask`: the servable reader."""
    return prune_model(model.merge_and_unload(), mask)


def window_batches(rows, batch_size: int, steps: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` LM batches of `batch_size` equal-length rows of the TokenRows `rows` (corpus
    windows: rearqa.training.data.distill_rows.corpus_windows), drawn in a seeded order and
    cycled; rows shorter than the longest (a last partial window) are left out."""
    full = [i for i, n in enumerate(rows.lengths) if n == max(rows.lengths)]
    if len(full) < batch_size:
        raise ValueError(f"{len(full)} full windows for batches of {batch_size}; draw more windows")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed)).tolist()
    for step in range(steps):
        picks = [full[order[(step * batch_size + j) % len(full)]] for j in range(batch_size)]
        ids = torch.stack([rows.ids[rows.starts[i]:rows.starts[i + 1]] for i in picks]).long()
        ids = ids.to(device)
        yield {"input_ids": ids, "labels": ids}
