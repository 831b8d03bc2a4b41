"""TPLA across g real processes: torch.distributed with the gloo backend on the CPU.

Each rank (a process spawned by torch.multiprocessing) holds the whole model except that its
attention layers are TPLAAttention(rank=j): its cache keeps only latent slice j plus the rotary
key, its decode reads only its W_UK/W_UV columns, and each layer's output is summed across ranks
by one all_reduce. Everything else (embeddings, q_proj, kv_a, MLP, lm_head) is replicated, so
this run shows TPLA's communication and its split of the latent cache, not a full tensor-parallel
model. The result (rank 0's; every rank holds the same after the all-reduces) comes back to the
caller so it can be compared with the one-process simulation (sharded.py).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rearqa.reader.backbone.tpla import decode
from rearqa.reader.backbone.tpla.sharded import install_tpla

LOOPS = {"teacher_forced": decode.teacher_forced, "greedy": decode.greedy}


def run_distributed(model: nn.Module, loop: str, shards: int = 2, threads_per_rank: int = 1,
                    nope_scale: float = 1.0, **loop_args) -> dict:
    """Run `loop` (a name in LOOPS, with `loop_args` such as ids=, prefill= or steps=) on `model`
    (MLA, rotation already folded) split over `shards` spawned gloo processes; rank 0's result.
    The model reaches the ranks through torch.multiprocessing's shared memory; each rank
    installs its own TPLAAttention share on its copy, so `model` itself is not changed."""
    if loop not in LOOPS:
        raise ValueError(f"loop {loop!r}: one of {list(LOOPS)}")
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_main, args=(shards, model, loop, loop_args, threads_per_rank, tmp, nope_scale),
                 nprocs=shards, join=True)
        result = Path(tmp) / "result.pt"
        return torch.load(result, weights_only=True)  # tensors and numbers: no pickled objects


def _rank_main(rank: int, shards: int, model: nn.Module, loop: str, loop_args: dict,
               threads: int, tmp: str, nope_scale: float = 1.0) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=shards)
    try:
        install_tpla(model, shards, rank=rank, nope_scale=nope_scale)
        dist.barrier()  # start the clocks together
        result = LOOPS[loop](model, **loop_args)
        if rank == 0:
            torch.save(result, Path(tmp) / "result.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
