"""Token-by-token decode loops shared by the one-process simulation, the ranks of dist.py and
the error measurement: a full prefill, then one query token per forward (the sharded path)."""
from __future__ import annotations

import time

import torch
from torch import nn


@torch.no_grad()
def teacher_forced(model: nn.Module, ids: torch.Tensor, prefill: int) -> dict:
    """Prefill ids[:, :prefill] (full MLA), then feed ids[:, t] one at a time for t = prefill ..
    T-2. Returns {"logits": (B, T-1-prefill, V) float32, the decode-path predictions of
    ids[:, prefill+1:], "seconds": wall time of the decode steps}."""
    if not 0 < prefill < ids.shape[1] - 1:
        raise ValueError(f"prefill={prefill}: must leave at least one decode step in {ids.shape[1]} tokens")
    out = model(input_ids=ids[:, :prefill], use_cache=True)
    cache, steps = out.past_key_values, []
    start = time.perf_counter()
    for t in range(prefill, ids.shape[1] - 1):
        out = model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        steps.append(out.logits[:, -1].float())  # (B, V)
    return {"logits": torch.stack(steps, dim=1), "seconds": time.perf_counter() - start}


@torch.no_grad()
def greedy(model: nn.Module, ids: torch.Tensor, steps: int) -> dict:
    """Prefill `ids` (B, P), then `steps` greedy tokens. Returns {"tokens": (B, steps),
    "logits": (B, steps, V) float32 (the logits each token was picked from), "seconds"}."""
    out = model(input_ids=ids, use_cache=True)
    cache, logits = out.past_key_values, [out.logits[:, -1].float()]
    tokens = [logits[-1].argmax(-1, keepdim=True)]  # (B, 1)
    start = time.perf_counter()
    for _ in range(steps - 1):
        out = model(input_ids=tokens[-1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits.append(out.logits[:, -1].float())
        tokens.append(logits[-1].argmax(-1, keepdim=True))
    return {"tokens": torch.cat(tokens, dim=1), "logits": torch.stack(logits, dim=1),
            "seconds": time.perf_counter() - start}
