"""Fused LoRA linear, the torch reference: y = x W^T + b + s (x A^T) B^T, as PEFT's LoRA layer
computes it at inference (dropout off), in the input dtype. Never forms B A (N x K)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lora_linear_reference(x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor,
                          lora_b: torch.Tensor, bias: torch.Tensor | None = None, *,
                          scaling: float = 1.0, block_m: int | None = None,
                          block_n: int | None = None, block_k: int | None = None,
                          num_warps: int | None = None, num_stages: int | None = None,
                          n_tiles: int | None = None) -> torch.Tensor:
    """x (..., K), weight (N, K), lora_a (r, K), lora_b (N, r), bias (N,) or None -> (..., N).
    The tile knobs are the kernel's, accepted and ignored here."""
    return F.linear(x, weight, bias) + F.linear(F.linear(x, lora_a), lora_b) * scaling
