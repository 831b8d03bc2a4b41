"""Top-k of each row in one Triton program: one bitonic sort of packed (value, index) keys.

A row of up to MAX_ROW scores is loaded whole. Each float is mapped to an int32 whose signed
order is the float order (flip the magnitude bits of negatives), shifted into the high half of an
int64 whose low half is the inverted position, so one descending tl.sort orders by value and
breaks ties towards the lower position (deterministic, unlike torch.topk). The first k keys are
unpacked and stored. One launch per call against torch.topk's radix select plus sort; whether
that wins at SpAtten's sizes is the benchmark's question (the op dispatches to torch.topk until
it says so). NaN scores are not supported, -0.0 ranks below +0.0, and float64 is refused (the
packing needs 32-bit floats).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROW = 16384  # a row's keys live in registers: 16K int64 over 8 warps is 512 B a thread


@triton.jit
def _topk_kernel(scores, values, indices, S, K, s_sb, s_ss, s_vb, s_ib,
                 BLOCK: tl.constexpr, LARGEST: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    ok = offs < S
    x = tl.load(scores + row * s_sb + offs * s_ss, mask=ok, other=0.0).to(tl.float32)
    bits = x.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # signed order of key == float order of x
    if not LARGEST:
        key = ~key
    packed = (key.to(tl.int64) << 32) | (BLOCK - 1 - offs).to(tl.int64)
    packed = tl.where(ok, packed, -9223372036854775807 - 1)  # padding sorts last
    packed = tl.sort(packed, descending=True)
    position = (BLOCK - 1 - (packed & 0xFFFFFFFF)).to(tl.int32)
    keep = offs < K
    value = tl.load(scores + row * s_sb + position * s_ss, mask=keep, other=0.0)
    tl.store(values + row * s_vb + offs, value, mask=keep)
    tl.store(indices + row * s_ib + offs, position.to(tl.int64), mask=keep)


def topk_triton(scores: torch.Tensor, k: int, *, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel beside `topk` (shapes: reference.topk_reference); rows up to MAX_ROW long."""
    if scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)}: expected (B, S)")
    batch, length = scores.shape
    if not 0 < k <= length:
        raise ValueError(f"k={k}: must be in 1..{length} (the row length)")
    if length > MAX_ROW:
        raise ValueError(f"rows of {length}: the kernel sorts rows of up to {MAX_ROW} in registers")
    if scores.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {scores.dtype}: the kernel packs 32-bit floats (cast float64 first)")
    values = torch.empty(batch, k, device=scores.device, dtype=scores.dtype)
    indices = torch.empty(batch, k, device=scores.device, dtype=torch.int64)
    block = triton.next_power_of_2(length)
    _topk_kernel[(batch,)](scores, values, indices, length, k, *scores.stride(), values.stride(0),
                           indices.stride(0), BLOCK=block, LARGEST=largest,
                           num_warps=8 if block >= 4096 else 4)
    return values, indices
