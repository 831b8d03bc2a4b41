"""The pruning mask: which KV groups and MLP channels each layer keeps, and how it is chosen.

A mask keeps the same number of groups in every layer (a stock Llama checkpoint has one head
count and one intermediate size), the running importance choosing which. It is saved as JSON:

    {"format": 1, "kv_heads": 3, "intermediate": 1536,
     "kv_keep": [[0, 2], ...],            one list per layer, sorted
     "mlp_keep": [[0, 1, 5, ...], ...]}

During fine-tuning the mask acts through `install_mask`: forward pre-hooks that zero the inputs
of o_proj (the pruned query heads' outputs) and down_proj (the pruned channels). That is exactly
the function of the physically pruned model (prune.py), so training sees what will be served.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rearqa.config_errors import ConfigError
from rearqa.files import atomic_write_text
from rearqa.reader.backbone.loraprune.config import PruneShape
from rearqa.reader.backbone.loraprune.groups import GroupScores

FORMAT = 1


@dataclass
class PruneMask:
    """The groups each layer keeps (indices into the unpruned model's)."""

    kv_heads: int  # KV heads per layer in the unpruned model
    intermediate: int  # MLP width in the unpruned model
    kv_keep: list[list[int]]  # per layer, the KV heads kept (with their query heads)
    mlp_keep: list[list[int]]  # per layer, the intermediate channels kept
    format: int = FORMAT  # version of this file's layout

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ConfigError(f"mask format {self.format!r}; this rearqa reads format {FORMAT}")
        if len(self.kv_keep) != len(self.mlp_keep):
            raise ConfigError(f"mask: kv_keep has {len(self.kv_keep)} layers, mlp_keep "
                              f"{len(self.mlp_keep)}; they must match")
        self.kv_keep = [sorted(int(i) for i in keep) for keep in self.kv_keep]
        self.mlp_keep = [sorted(int(i) for i in keep) for keep in self.mlp_keep]
        _check_uniform("kv_keep", self.kv_keep, self.kv_heads)
        _check_uniform("mlp_keep", self.mlp_keep, self.intermediate)

    @property
    def kv_groups(self) -> int:
        return len(self.kv_keep[0]) if self.kv_keep else 0

    @property
    def mlp_channels(self) -> int:
        return len(self.mlp_keep[0]) if self.mlp_keep else 0

    @classmethod
    def full(cls, shape: PruneShape) -> "PruneMask":
        """The mask that keeps everything (0% sparsity)."""
        return cls(shape.kv_heads, shape.intermediate, [list(range(shape.kv_heads))] * shape.layers,
                   [list(range(shape.intermediate))] * shape.layers)

    def check_model(self, shape: PruneShape) -> None:
        """Refuse a mask made for another model's shape."""
        made = (len(self.kv_keep), self.kv_heads, self.intermediate)
        if made != (shape.layers, shape.kv_heads, shape.intermediate):
            raise ConfigError(f"mask is for {made[0]} layers, {made[1]} KV heads, MLP {made[2]}; the "
                              f"model has {shape.layers}, {shape.kv_heads}, {shape.intermediate}")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(asdict(self)) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PruneMask":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"mask {path}: not readable JSON ({exc})") from exc
        known = set(cls.__dataclass_fields__)
        if not isinstance(data, dict) or set(data) - known:
            raise ConfigError(f"mask {path}: expected an object with fields {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"mask {path}: {exc}") from exc


def _check_uniform(name: str, keeps: list[list[int]], total: int) -> None:
    counts = {len(keep) for keep in keeps}
    if len(counts) > 1:
        raise ConfigError(f"mask {name}: layers keep {sorted(counts)} groups; a servable Llama keeps "
                          "the same number in every layer")
    for layer, keep in enumerate(keeps):
        if not keep or len(set(keep)) != len(keep) or keep[0] < 0 or keep[-1] >= total:
            raise ConfigError(f"mask {name}[{layer}]={keep}: needs distinct indices in 0..{total - 1}, "
                              "at least one")


class ImportanceTracker:
    """The running (exponential moving) average of the group importances over steps."""

    def __init__(self, ema: float = 0.9):
        self.ema = ema
        self.scores: GroupScores | None = None

    def update(self, step_scores: GroupScores) -> GroupScores:
        if self.scores is None:  # the first estimate seeds the average (no bias towards zero)
            self.scores = GroupScores(step_scores.attn.clone(), step_scores.mlp.clone())
        else:
            for kind in ("attn", "mlp"):
                getattr(self.scores, kind).mul_(self.ema).add_(getattr(step_scores, kind),
                                                               alpha=1 - self.ema)
        return self.scores


def cubic_sparsity(step: int, start: int, end: int, target: float) -> float:
    """The sparsity at `step` on the cubic schedule (Zhu & Gupta, as LoRAPrune uses it): 0 up to
    `start`, rising as target * (1 - (1 - t)^3) with t the progress to `end`, then `target`."""
    if step <= start:
        return 0.0
    if step >= end:
        return target
    progress = (step - start) / (end - start)
    return target * (1 - (1 - progress) ** 3)


def kept_at(progress: float, total: int, final_keep: int) -> int:
    """Groups kept out of `total` at `progress` (0..1, the schedule's value with target 1) of the
    way from all of them to `final_keep`."""
    return max(final_keep, total - round(progress * (total - final_keep)))


def select_mask(scores: GroupScores, kv_keep: int, mlp_keep: int,
                previous: PruneMask | None = None) -> PruneMask:
    """Keep the `kv_keep` / `mlp_keep` most important groups in each layer. With `previous`, a
    pruned group stays pruned (the schedule only removes), so only its kept groups compete."""
    def top(rows: torch.Tensor, keep: int, prior: list[list[int]] | None) -> list[list[int]]:
        chosen = []
        for layer, row in enumerate(rows):
            allowed = torch.full_like(row, float("-inf"))
            idx = (torch.tensor(prior[layer]) if prior is not None else torch.arange(row.numel())).to(row.device)
            allowed[idx] = row[idx]
            if keep > idx.numel():
                raise ConfigError(f"keep {keep} groups: only {idx.numel()} are left in layer {layer}")
            chosen.append(torch.topk(allowed, keep).indices.tolist())
        return chosen

    layers, kv_heads = scores.attn.shape
    return PruneMask(kv_heads, scores.mlp.shape[1],
                     top(scores.attn, kv_keep, previous.kv_keep if previous else None),
                     top(scores.mlp, mlp_keep, previous.mlp_keep if previous else None))


def install_mask(model: torch.nn.Module, mask: PruneMask, shape: PruneShape) -> list:
    """Forward pre-hooks zeroing the pruned heads' o_proj inputs and the pruned channels' down_proj
    inputs of `model` (plain or PEFT-wrapped); returns the handles (remove them to lift the mask)."""
    mask.check_model(shape)
    device = next(model.parameters()).device
    gates = {"self_attn.o_proj": _head_gates(mask, shape), "mlp.down_proj": _channel_gates(mask)}
    handles = []
    for name, module in model.named_modules():  # built once above: a PEFT model has ~2,500 modules
        match = _GATED.search(name)
        if match is not None:
            gate = gates[match[2]][int(match[1])].to(device)
            handles.append(module.register_forward_pre_hook(_gate_hook(gate)))
    return handles


# the gated projections' dotted names: ...layers.3.self_attn.o_proj, ...layers.3.mlp.down_proj
_GATED = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn\.o_proj|mlp\.down_proj)$")


def _head_gates(mask: PruneMask, shape: PruneShape) -> list[torch.Tensor]:
    """Per layer, 1 on the o_proj input dims of kept query heads, 0 elsewhere: (heads * head_dim,)."""
    gates = []
    for keep in mask.kv_keep:
        groups = torch.zeros(shape.kv_heads)
        groups[keep] = 1
        gates.append(groups.repeat_interleave(shape.group_size * shape.head_dim))
    return gates


def _channel_gates(mask: PruneMask) -> list[torch.Tensor]:
    gates = []
    for keep in mask.mlp_keep:
        gate = torch.zeros(mask.intermediate)
        gate[keep] = 1
        gates.append(gate)
    return gates


def _gate_hook(gate: torch.Tensor):
    def hook(module, args):
        x = args[0]
        return (x * gate.to(device=x.device, dtype=x.dtype), *args[1:])
    return hook
