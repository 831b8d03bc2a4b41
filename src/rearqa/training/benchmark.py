"""Training throughput: optimiser steps of the real task, data loading included.

`bench_method` builds a method's task as `train` does (snapshot, tokenizer, base model,
pre-tokenisation, LoRA), runs `warmup` optimiser steps and then `steps` measured ones through
the same step function as the loop (rearqa.training.step: the task's `batch()` collation, the
forward and backward passes, clipping, AdamW), synchronising with the device only at the two
ends of the measured run, and reports:

    tokens_per_s          non-pad input tokens per second (the training-token count)
    padded_tokens_per_s   input positions per second, padding included (the compute spent)
    padding_share         1 - tokens / padded tokens
    s_per_step            seconds per optimiser step
    peak_memory_gib       torch.cuda.max_memory_allocated over warm-up and measured steps
    mfu                   tokens_per_s * (4 * frozen + 6 * trainable parameters) / peak FLOP/s:
                          frozen weights cost a forward and an input-gradient matmul per token,
                          trained ones a weight-gradient matmul too; attention FLOPs and the
                          output layer's few labelled positions are not counted
    build_s, tokenise_s   building the task, and of that the pre-tokenisation
    warmup_s              the warm-up steps (first-call costs: cuBLAS heuristics, allocator growth)
    host_syncs_per_step   on CUDA: synchronising calls in one extra step, counted with
                          torch.cuda.set_sync_debug_mode("warn"); their sources are listed

Nothing is written under the config's `out`. The command is scripts/bench_train.py.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext

import torch

from rearqa.training.checkpoint import trainable_parameters
from rearqa.training.config import TrainConfig
from rearqa.training.precision import resolve_base_dtype, resolve_device
from rearqa.training.schedule import DataOrder, lr_factor, stages
from rearqa.training.step import optimizer_step

H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's dense bf16 tensor-core peak for the H200 (SXM)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_syncs(run_step) -> tuple[int, list[str]]:
    """Synchronising CUDA calls made by `run_step()`, and where each came from (first lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(found), sorted({f"{w.filename}:{w.lineno}" for w in found})


def bench_method(config: TrainConfig, warmup: int = 2, steps: int = 10,
                 peak_tflops: float = H200_BF16_DENSE_TFLOPS, count_syncs: bool = True) -> dict:
    """Throughput of `config`'s task (see the module docstring); one result row."""
    from rearqa.training.train import build_task, make_optimizer

    device, amp = resolve_device(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    task = build_task(config, device)
    _sync(device)
    build_s = time.perf_counter() - started
    opt = make_optimizer(task, config)
    total = warmup + steps + 1
    plan = stages(config, total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(plan, config.warmup_ratio, min(s, total - 1)))
    stage = plan[-1]["name"]  # the main stage: most of a run's steps
    order = DataOrder(task.n_items, config.seed)
    params = list(trainable_parameters(task.model).values())
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
    step_at = lambda s: optimizer_step(task, order, opt, sched, params, config, s, stage,  # noqa: E731
                                       device, autocast)
    task.model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for s in range(warmup):
        step_at(s)
    _sync(device)
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    tokens = padded = 0
    for s in range(warmup, warmup + steps):
        result = step_at(s)
        tokens, padded = tokens + result.tokens, padded + result.padded_tokens
    _sync(device)
    seconds = time.perf_counter() - started
    last = result.read()
    syncs, sync_sources = None, []
    if count_syncs and device.type == "cuda":
        syncs, sync_sources = _count_syncs(lambda: step_at(warmup + steps))
    frozen = sum(p.numel() for p in task.model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in params)
    flops_per_token = 4 * frozen + 6 * trainable
    tokens_per_s = tokens / seconds
    return {
        "method": config.method, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": config.batch, "grad_accum": config.grad_accum,
        "rows_per_step": task.items_per_micro * config.grad_accum
        * (config.group_size if config.method == "rear" else 1),
        "row_chunks": config.row_chunks,
        "autocast": str(amp).replace("torch.", "") if amp else "none",
        "base_dtype": str(resolve_base_dtype(config, device, amp)).replace("torch.", ""),
        "items": task.n_items, "warmup": warmup, "steps": steps,
        "build_s": round(build_s, 3), "tokenise_s": round(task.tokenise_seconds, 3),
        "warmup_s": round(warmup_s, 3),
        "seconds": round(seconds, 4), "s_per_step": round(seconds / steps, 4),
        "tokens": tokens, "padded_tokens": padded, "tokens_per_step": tokens / steps,
        "tokens_per_s": round(tokens_per_s, 1), "padded_tokens_per_s": round(padded / seconds, 1),
        "padding_share": round(1 - tokens / padded, 4) if padded else 0.0,
        "peak_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                            if device.type == "cuda" else None),
        "frozen_params": frozen, "trainable_params": trainable,
        "flops_per_token": flops_per_token, "peak_tflops": peak_tflops,
        "mfu": round(tokens_per_s * flops_per_token / (peak_tflops * 1e12), 5),
        "last_loss": last["loss"] if math.isfinite(last["loss"]) else None,
        "host_syncs_per_step": syncs, "sync_sources": sync_sources,
    }


COLUMNS = (("method", "method", "{}"), ("rows", "rows_per_step", "{}"),
           ("chunks", "row_chunks", "{}"), ("base", "base_dtype", "{}"),
           ("tok/s", "tokens_per_s", "{:,.0f}"),
           ("padded tok/s", "padded_tokens_per_s", "{:,.0f}"), ("pad", "padding_share", "{:.1%}"),
           ("s/step", "s_per_step", "{:.3f}"), ("peak GiB", "peak_memory_gib", "{}"),
           ("MFU", "mfu", "{:.2%}"), ("syncs/step", "host_syncs_per_step", "{}"),
           ("build s", "build_s", "{:.1f}"), ("tokenise s", "tokenise_s", "{:.1f}"))


def table(rows: list[dict]) -> str:
    """A markdown table of result rows."""
    lines = [f"| {' | '.join(name for name, _, _ in COLUMNS)} |",
             f"|{'|'.join('---' for _ in COLUMNS)}|"]
    lines += [f"| {' | '.join(fmt.format(row[key]) for _, key, fmt in COLUMNS)} |" for row in rows]
    return "\n".join(lines)
