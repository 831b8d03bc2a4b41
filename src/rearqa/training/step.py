"""One optimiser step, with no host sync inside it.

A step runs `grad_accum` micro-batches (forward, loss, backward each), clips the gradients and
steps AdamW and the schedule. Nothing in it reads a GPU value back to the host: the losses are
summed on the device, the grad norm stays a tensor, and the token counts come from the cached
row lengths on the CPU (rearqa.training.data.token_rows). The host reads a step's numbers once,
with one transfer, when they are logged (`StepResult.read`), so on the steps in between the CPU
runs ahead queueing work and the GPU never waits for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOSS_KEYS = ("loss", "lm", "rank")  # task.losses() parts, as train_log.jsonl records them


@dataclass
class StepResult:
    """What one optimiser step did; the tensors stay on the device until `read`."""

    losses: torch.Tensor  # (len(LOSS_KEYS),) means over the step's micro-batches
    grad_norm: torch.Tensor | None  # total gradient norm before clipping; None: clipping off
    lr: float  # the learning rate the step used
    tokens: int  # non-pad input tokens of every row (the training-token count)
    padded_tokens: int  # input positions including padding (the compute spent)

    def read(self) -> dict[str, float]:
        """The losses and the grad norm as floats: one device-to-host transfer."""
        values = self.losses.detach().float()
        if self.grad_norm is not None:
            values = torch.cat([values, self.grad_norm.detach().float().reshape(1).to(values)])
        numbers = values.tolist()
        parts = dict(zip(LOSS_KEYS, numbers))
        parts["grad_norm"] = numbers[len(LOSS_KEYS)] if self.grad_norm is not None else math.nan
        return parts


def optimizer_step(task, order, opt, sched, params: list[torch.nn.Parameter], config, step: int,
                   stage: str, device: torch.device, autocast) -> StepResult:
    """Optimiser step `step` (0-based) over `grad_accum` micro-batches in data order."""
    per_micro, accum = task.items_per_micro, config.grad_accum
    losses = torch.zeros(len(LOSS_KEYS), device=device)
    tokens = padded = 0
    for micro in range(accum):
        batch = task.batch(order.take((step * accum + micro) * per_micro, per_micro), device)
        with autocast():
            parts = task.losses(batch, stage)
        (parts["loss"] / accum).backward()
        losses += torch.stack([parts[k].detach().float() for k in LOSS_KEYS]) / accum
        tokens, padded = tokens + batch.tokens, padded + batch.padded_tokens
    if hasattr(task, "after_backward"):  # reads the step's gradients before clipping and zeroing
        task.after_backward()
    grad_norm = (torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                 if config.max_grad_norm > 0 else None)
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return StepResult(losses, grad_norm, lr, tokens, padded)
