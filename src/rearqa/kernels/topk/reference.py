"""Top-k token selection, the reference: torch.topk over the last dimension."""
from __future__ import annotations

import torch


def topk_reference(scores: torch.Tensor, k: int, *, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, S) -> (values (B, k), indices (B, k) int64), best first."""
    if not 0 < k <= scores.shape[-1]:
        raise ValueError(f"k={k}: must be in 1..{scores.shape[-1]} (the row length)")
    values, indices = torch.topk(scores, k, dim=-1, largest=largest, sorted=True)
    return values, indices
