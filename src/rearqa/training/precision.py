"""Where a training run computes and in which dtypes: device, autocast, the frozen base's dtype,
fp32 trainable parameters.

Under bf16 autocast (`dtype`, bf16 by default on CUDA) every matmul runs in bf16 whatever the
weights are stored in, so a frozen base kept in fp32 only costs memory and a cast of each weight
in every forward and backward. With `base_dtype` auto the base is loaded in bf16 when training on
CUDA under bf16 autocast. What trains stays fp32 (`keep_trainable_fp32`): LoRA matrices, PEFT's
trainable token rows (held by value and cast to the embedding's dtype in its forward), a head
module; an AdamW update is often below bf16's resolution of a weight. On the CPU nothing
changes by default: fp32 throughout, no autocast.

No torch.compile: the decoder compiled with dynamic shapes (chunks differ in rows and width)
trained correctly on the CPU with the tiny test Llama, but on an H200 the 30-layer SmolLM2 had not
finished its compiling warm-up steps within 200 s, nor within 330 s, given to the whole benchmark
process (of which building the task takes ~25 s; docs/benchmarks.md (e)). A run that may stall
for minutes before its first step is worse than the eager loop it would speed up; CUDA graphs, or
a compile with static bucketed widths, are the ways to try next.
"""
from __future__ import annotations

import torch

from rearqa.config_errors import ConfigError
from rearqa.training.config import TrainConfig


def resolve_device(config: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    """The device, and the autocast dtype (None = plain fp32)."""
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={config.device!r} but CUDA is not available; use cpu")
    device = torch.device(name)
    return device, autocast_dtype(config, device)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when `dtype` asks for it, or is auto on CUDA; None = plain fp32."""
    wants_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda")
    return torch.bfloat16 if wants_bf16 else None


def resolve_base_dtype(config: TrainConfig, device: torch.device,
                       amp: torch.dtype | None) -> torch.dtype:
    """The dtype the frozen base is loaded in (see the module docstring for auto)."""
    if config.base_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and amp == torch.bfloat16 else torch.float32
    return getattr(torch, config.base_dtype)  # DTYPES are torch names


def keep_trainable_fp32(model: torch.nn.Module) -> int:
    """Cast every trainable parameter to fp32 in place (tied ones are one Parameter: cast once);
    returns how many were cast. The frozen parameters keep their dtype."""
    cast = 0
    for param in model.parameters():  # deduplicated: a tied parameter comes once
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
