"""One generation's SpAtten state: what is alive, why, and what it cost.

`SpAttenState` is created at the prefill (layer 0 with no cached tokens) and carried through every
decode step of that generation. It grows by one position per decode step and only ever loses
tokens and heads: `alive` and `head_alive` are monotone (the cascade), so a token pruned at layer l
of step t is masked at every later layer of step t and at every layer of every later step.

`SpAttenStats` counts, per phase (0 prefill, 1 decode), layer and example, the attention FLOPs
and KV bytes the unpruned model spends beside what SpAtten would spend if the masked tokens, heads
and values were evicted rather than masked (this simulation masks; nothing is freed).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from rearqa.reader.backbone.spatten.config import SpAttenConfig, keep_count

PREFILL, DECODE = 0, 1
# counters of SpAttenStats.counts, each (phase, layer, batch)
COUNTERS = ("dense_flops", "flops", "dense_kv_bytes", "kv_bytes", "rows", "flat_rows")


@dataclass
class SpAttenStats:
    """What one generation cost; every counter per (phase, layer, example)."""

    num_layers: int
    batch: int
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    decode_steps: int = 0  # decode forward passes (generated tokens after the first)
    alive_tokens: torch.Tensor | None = None  # (phase, L, B) alive tokens after each layer's pruning
    alive_heads: torch.Tensor | None = None  # (phase, L, B) alive query heads
    pruned_layer: torch.Tensor | None = None  # (B, S) the layer a position was pruned at; -1 alive
    pruned_step: torch.Tensor | None = None  # (B, S) the step (0 prefill, t decode) it was pruned at
    pruned_heads: torch.Tensor | None = None  # (B, H) the layer a query head was pruned from; -1 alive

    def __post_init__(self) -> None:
        shape = (2, self.num_layers, self.batch)
        self.counts = {name: torch.zeros(shape, dtype=torch.float64) for name in COUNTERS}
        self.alive_tokens = torch.zeros(shape, dtype=torch.long)
        self.alive_heads = torch.zeros(shape, dtype=torch.long)

    def ratio(self, name: str, phase: int, example: int | None = None) -> float:
        """SpAtten's `name` ("flops" or "kv_bytes") over the unpruned model's, in `phase`."""
        ours, dense = self.counts[name][phase], self.counts[f"dense_{name}"][phase]
        if example is not None:
            ours, dense = ours[:, example], dense[:, example]
        return float(ours.sum() / dense.sum()) if dense.sum() else float("nan")

    def lsb_rate(self, phase: int) -> float:
        """Share of softmax rows (alive heads x alive queries) that refetched their keys' LSBs."""
        rows = self.counts["rows"][phase].sum()
        return float(self.counts["flat_rows"][phase].sum() / rows) if rows else 0.0

    def example_cost(self, example: int) -> dict:
        """One example's counters summed over layers, per phase: the absolute FLOPs and bytes (so a
        report can sum them over questions), with the decode steps they were spent over."""
        cost = {"decode_steps": self.decode_steps}
        for phase, tag in ((PREFILL, "prefill"), (DECODE, "decode")):
            for name in COUNTERS:
                cost[f"{tag}_{name}"] = float(self.counts[name][phase, :, example].sum())
        cost["alive_tokens_last_layer"] = int(self.alive_tokens[PREFILL, -1, example])
        cost["alive_heads_last_layer"] = int(self.alive_heads[PREFILL, -1, example])
        return cost

    def select(self, rows: list[int]) -> "SpAttenStats":
        """These stats restricted to batch `rows` (a copy)."""
        out = copy.copy(self)
        out.batch = len(rows)
        out.counts = {name: c[..., rows].clone() for name, c in self.counts.items()}
        out.alive_tokens, out.alive_heads = self.alive_tokens[..., rows], self.alive_heads[..., rows]
        out.pruned_layer, out.pruned_step = self.pruned_layer[rows], self.pruned_step[rows]
        out.pruned_heads = self.pruned_heads[rows]
        return out

    def summary(self) -> dict:
        """Aggregate numbers of this generation (ratios are SpAtten over unpruned)."""
        return {"decode_steps": self.decode_steps,
                "prefill_flops_ratio": self.ratio("flops", PREFILL),
                "decode_flops_ratio": self.ratio("flops", DECODE),
                "decode_kv_bytes_ratio": self.ratio("kv_bytes", DECODE),
                "decode_lsb_rate": self.lsb_rate(DECODE),
                "alive_tokens_last_layer": self.alive_tokens[PREFILL, -1].tolist(),
                "alive_heads_last_layer": self.alive_heads[PREFILL, -1].tolist()}


def newest(valid: torch.Tensor, count: int) -> torch.Tensor:
    """(B, S) bool: the last `count` real tokens of each row (`valid` marks them; left padding)."""
    return valid.long().flip(1).cumsum(1).flip(1) <= count


class SpAttenState:
    """Alive tokens and heads of one generation and the importance that decides them."""

    def __init__(self, cfg: SpAttenConfig, num_layers: int, batch: int, heads: int,
                 device: torch.device) -> None:
        self.cfg, self.num_layers, self.heads = cfg, num_layers, heads
        self.step = 0  # 0 during the prefill, t during the t-th decode step
        empty = dict(device=device)
        self.alive = torch.ones(batch, 0, dtype=torch.bool, **empty)  # (B, S)
        self.received = torch.zeros(batch, 0, dtype=torch.float64, **empty)  # attention received
        self.seen_by = torch.zeros(batch, 0, dtype=torch.float64, **empty)  # queries that could see it
        self.head_alive = torch.ones(batch, heads, dtype=torch.bool, **empty)  # (B, H)
        self.head_importance = torch.zeros(batch, heads, dtype=torch.float64, **empty)
        self.stats = SpAttenStats(num_layers, batch)
        self.stats.pruned_layer = torch.full((batch, 0), -1, dtype=torch.long)
        self.stats.pruned_step = torch.full((batch, 0), -1, dtype=torch.long)
        self.stats.pruned_heads = torch.full((batch, heads), -1, dtype=torch.long)

    def select(self, rows: list[int]) -> "SpAttenState":
        """A copy of this state restricted to batch `rows`, to continue those rows a second way
        (REAR's confidence pass over the prompts its greedy answers already continued)."""
        out = copy.copy(self)
        index = torch.tensor(rows, device=self.alive.device)
        for name in ("alive", "received", "seen_by", "head_alive", "head_importance"):
            setattr(out, name, getattr(self, name)[index].clone())
        out.stats = self.stats.select(rows)
        return out

    def grow(self, length: int) -> None:
        """Append positions up to `length` (the cache after this step's keys): alive, unscored."""
        new = length - self.alive.shape[1]
        if new <= 0:
            return
        batch, device = self.alive.shape[0], self.alive.device
        self.alive = torch.cat([self.alive, torch.ones(batch, new, dtype=torch.bool, device=device)], 1)
        zeros = torch.zeros(batch, new, dtype=torch.float64, device=device)
        self.received = torch.cat([self.received, zeros], 1)
        self.seen_by = torch.cat([self.seen_by, zeros], 1)
        minus = torch.full((batch, new), -1, dtype=torch.long)
        self.stats.pruned_layer = torch.cat([self.stats.pruned_layer, minus], 1)
        self.stats.pruned_step = torch.cat([self.stats.pruned_step, minus.clone()], 1)

    def importance(self) -> torch.Tensor:
        """(B, S) attention received per query that could see the token: in a causal model token j
        is visible to every later query, so raw sums favour early tokens for their position alone."""
        return self.received / self.seen_by.clamp_min(1)

    def prune_tokens(self, layer: int, valid: torch.Tensor) -> None:
        """Prune the least important alive tokens down to the schedule's count at `layer`.
        `valid` (B, S): the positions that are real tokens (not left padding)."""
        cfg = self.cfg
        if cfg.tokens >= 1 or layer < cfg.start_layer:
            return
        protected = newest(valid, cfg.recent)
        totals = valid.sum(1)
        targets = torch.tensor([keep_count(cfg.tokens, int(n), layer, self.num_layers, cfg.start_layer)
                                for n in totals.tolist()], device=valid.device)
        alive = self.alive & valid
        excess = (alive.sum(1) - targets).clamp_min(0)  # (B,)
        candidates = alive & ~protected
        score = self.importance().masked_fill(~candidates, float("inf"))
        rank = score.argsort(dim=1, stable=True).argsort(dim=1)  # 0 = least important
        prune = candidates & (rank < excess[:, None])
        if prune.any():
            self.alive &= ~prune
            where = prune.cpu()
            self.stats.pruned_layer[where] = layer
            self.stats.pruned_step[where] = self.step

    def prune_heads(self, layer: int) -> None:
        """Prune the heads with the least accumulated output magnitude down to the schedule."""
        cfg = self.cfg
        if cfg.heads >= 1 or layer < cfg.start_layer:
            return
        target = keep_count(cfg.heads, self.heads, layer, self.num_layers, cfg.start_layer)
        excess = (self.head_alive.sum(1) - target).clamp_min(0)  # (B,)
        score = self.head_importance.masked_fill(~self.head_alive, float("inf"))
        rank = score.argsort(dim=1, stable=True).argsort(dim=1)
        drop = self.head_alive & (rank < excess[:, None])
        if drop.any():
            self.head_alive &= ~drop
            self.stats.pruned_heads[drop.cpu()] = layer

    def accumulate(self, probs: torch.Tensor, allowed: torch.Tensor, query_alive: torch.Tensor,
                   out: torch.Tensor, voters: torch.Tensor | None = None) -> None:
        """Add one layer's evidence: `probs` (B, H, T, S) and `allowed` (B, T, S) of the alive
        queries `query_alive` (B, T); `out` (B, H, T, D) the heads' outputs. `voters` (B, T): the
        queries whose attention counts towards token importance (default: every alive query; the
        `window` setting narrows it); head importance counts every alive query."""
        voters = query_alive if voters is None else voters & query_alive
        votes = voters[:, None, :, None].to(probs.dtype)
        received = (probs * votes * self.head_alive[:, :, None, None]).sum(dim=(1, 2))  # (B, S)
        self.received += received.double()
        self.seen_by += (allowed & voters[:, :, None]).sum(1).double()
        rows = query_alive[:, None, :, None].to(probs.dtype)
        self.head_importance += (out.abs().float() * rows).sum(dim=(2, 3)).double()
