"""Tile and split choices of the MLA decode kernel (torch- and triton-free, so CPU tests check them).

Split-KV (flash-decoding) cuts each sequence's cache into `num_splits` chunks so that a small
batch still fills the GPU: the grid is (batch, splits, head blocks), one program per chunk.
Two forces set the count:
  - occupancy: about two programs per multiprocessor, splits ~ 2 * SMs / (batch * head_blocks)
    (efficiency-methods.md section 6: 2 * 132 / B on the H200);
  - merge traffic: every split writes an fp32 partial (heads x kv_lora_rank) and its LSE, which the
    merge reads back; a split must read enough cache that this stays small. A split covers at
    least MERGE_SHARE_INV times the tokens whose cache bytes equal its partial's bytes (write and
    read), so the partials cost at most 1/MERGE_SHARE_INV of the cache traffic (Llama-3-8B shape:
    32 heads x 512 fp32 = 64 KiB a split, x2, against 1,152 B a token: >= 456 tokens a split).
The GPU session tunes these numbers (docs/kernels.md; `kernel_bench.py --parts mla_sweep`);
they are arguments of the op, not constants
baked into the kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

H200_SMS = 132  # multiprocessors of the H200 (and H100 SXM); the interpreter has no device to ask
MAX_SPLITS = 256
MERGE_SHARE_INV = 4  # partials cost at most a quarter of the cache bytes a split reads
MIN_DOT = 16  # tl.dot needs every dimension >= 16


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


@dataclass(frozen=True)
class DecodeTiles:
    """One launch's tiles: all of them powers of two, the real widths masked inside."""

    block_h: int  # heads per program (all heads of a sequence when heads <= 64)
    head_blocks: int  # programs across the heads of one sequence (1 up to 64 heads)
    block_n: int  # cache tokens per inner-loop step
    rank_pad: int  # kv_lora_rank padded to a power of two (loads masked, cache unpadded)
    rope_pad: int  # rope width padded likewise
    num_splits: int  # KV chunks per sequence (stage 1 grid axis 1)
    num_warps: int
    num_stages: int = 2  # software pipelining depth of the cache loads


def default_block_n(rank_pad: int) -> int:
    """Tokens per step: a (block_n, rank_pad) bf16 tile lives in shared memory, staged twice;
    32 tokens at 512 wide is 32 KiB a stage (vLLM's MLA choice), 64 below."""
    return 32 if rank_pad >= 512 else 64


def split_count(batch: int, head_blocks: int, max_len: int, block_n: int, heads: int, rank: int,
                rope: int, itemsize: int, sms: int = H200_SMS) -> int:
    """Splits per sequence: ~2 programs per SM, no split shorter than the merge-traffic bound."""
    occupancy = math.ceil(2 * sms / max(1, batch * head_blocks))
    partial_bytes = 2 * heads * (rank * 4 + 4)  # fp32 partial + LSE, written then read
    min_tokens = max(2 * block_n, MERGE_SHARE_INV * partial_bytes // ((rank + rope) * itemsize))
    by_length = math.ceil(max(1, max_len) / min_tokens)
    return max(1, min(occupancy, by_length, MAX_SPLITS))


def choose_tiles(batch: int, heads: int, rank: int, rope: int, max_len: int, itemsize: int,
                 sms: int = H200_SMS, block_n: int | None = None,
                 num_splits: int | None = None, num_warps: int | None = None,
                 num_stages: int | None = None) -> DecodeTiles:
    """The tiles of one launch; `block_n`, `num_splits`, `num_warps` and `num_stages` override the
    defaults (the GPU sweep, scripts/kernel_bench.py --parts mla_sweep, sets them)."""
    block_h = min(max(MIN_DOT, next_pow2(heads)), 64)
    head_blocks = math.ceil(heads / block_h)
    rank_pad, rope_pad = max(MIN_DOT, next_pow2(rank)), max(MIN_DOT, next_pow2(rope))
    block_n = block_n or default_block_n(rank_pad)
    if block_n < MIN_DOT or block_n & (block_n - 1):
        raise ValueError(f"block_n={block_n}: must be a power of two >= {MIN_DOT}")
    if num_splits is None:
        num_splits = split_count(batch, head_blocks, max_len, block_n, heads, rank, rope, itemsize, sms)
    if not 1 <= num_splits <= MAX_SPLITS:
        raise ValueError(f"num_splits={num_splits}: must be in 1..{MAX_SPLITS}")
    if num_warps is not None and num_warps not in (1, 2, 4, 8, 16):
        raise ValueError(f"num_warps={num_warps}: must be one of 1, 2, 4, 8, 16")
    if num_stages is not None and not 1 <= num_stages <= 6:
        raise ValueError(f"num_stages={num_stages}: must be in 1..6")
    # 8 warps: compiled for sm_90a on the CPU (Triton 3.9, docs/kernels.md), 4 warps spilled
    # registers at 96+64 paged and at 192+64; 8 spilled nowhere in the benchmark's shapes
    return DecodeTiles(block_h, head_blocks, block_n, rank_pad, rope_pad, num_splits,
                       num_warps=num_warps or 8, num_stages=num_stages or 2)
