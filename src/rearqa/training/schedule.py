"""A run's plan: its stages, learning-rate schedule, data order and token budget.

REAR trains in two stages, each with its own linear warm-up and cosine decay, as REAR's two runs
had: `warmup` (rank loss = pointwise BCE, REAR's stage 1) then `main` (the bi-granularity loss,
stage 2). A baseline has one `lm` stage, distill one `distill` stage. The data order is a
function of the seed and the position alone (seeded epoch permutations), so resuming needs no
data state and the baselines' token budget can be planned before a step is run.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig
from rearqa.training.run_files import PLAN_FILE

# Stage names, as train_log.jsonl records them.
WARMUP_STAGE, MAIN_STAGE, LM_STAGE, DISTILL_STAGE = "warmup", "main", "lm", "distill"


def stages(config: TrainConfig, total_steps: int) -> list[dict]:
    """[{name, start, steps}]: rear has warmup (pointwise BCE) then main; a baseline one stage."""
    if config.one_stage:
        name = DISTILL_STAGE if config.method in ("distill", "loraprune") else LM_STAGE
        return [{"name": name, "start": 0, "steps": total_steps}]
    parts = [(WARMUP_STAGE, config.warmup_stage_steps), (MAIN_STAGE, config.steps)]
    out, start = [], 0
    for name, steps in parts:
        if steps:
            out.append({"name": name, "start": start, "steps": steps})
            start += steps
    return out


def stage_at(plan_stages: list[dict], step: int) -> dict:
    """The stage that optimiser step `step` (0-based) belongs to."""
    return next(s for s in reversed(plan_stages) if step >= s["start"])


def lr_factor(plan_stages: list[dict], warmup_ratio: float, step: int) -> float:
    """Linear warm-up over warmup_ratio of the stage, then cosine to 0 at the stage's end."""
    stage = stage_at(plan_stages, step)
    t, length = step - stage["start"], stage["steps"]
    warm = math.ceil(warmup_ratio * length)
    if t < warm:
        return (t + 1) / (warm + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (t - warm) / max(1, length - warm)))


class DataOrder:
    """Item indices for any position of an endless stream of seeded epoch permutations."""

    def __init__(self, n_items: int, seed: int) -> None:
        if n_items < 1:
            raise ConfigError("no training examples: check train.splits and train.max_questions")
        self.n, self.seed, self._perms = n_items, seed, {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            perm = list(range(self.n))
            random.Random(f"{self.seed}:epoch:{epoch}").shuffle(perm)
            self._perms = {epoch: perm}  # one epoch is live at a time
        return self._perms[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + count)]


def plan_budget(order: DataOrder, lengths: list[int], per_micro: int, accum: int, budget: int) -> int:
    """Optimiser steps until the cumulative token count first reaches `budget`."""
    tokens, pos, steps = 0, 0, 0
    while tokens < budget:
        for _ in range(accum):
            tokens += sum(lengths[i] for i in order.take(pos, per_micro))
            pos += per_micro
        steps += 1
    return steps


def budget_from_log(path: str | Path) -> int:
    """The token count of a finished REAR run's train_log.jsonl (its last record)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token_budget_from={path}: no such train_log.jsonl")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"token_budget_from={path}: the log is empty")
    last = json.loads(lines[-1])
    plan = path.parent / PLAN_FILE
    if plan.is_file():
        total = json.loads(plan.read_text())["total_steps"]
        if last["step"] < total:
            raise ConfigError(f"token_budget_from={path}: that run stopped at step {last['step']} "
                              f"of {total}; finish it, or give token_budget as a number")
    return int(last["tokens"])
