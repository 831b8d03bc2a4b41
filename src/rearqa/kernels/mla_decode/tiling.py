"""Tile and split choices of the MLA decode kernel (torch- and triton-free, so CPU tests check them).

Split-KV (flash-decoding) cuts each sequence's cache into `num_splits` chunks so that a small
batch still fills the GPU: the grid is (batch, splits, head blocks), one program per chunk.
The rule, fitted to the H100 sweeps of session 16 (docs/kernels.md, `kernel_bench.py --parts
mla_sweep --sweep tiles|splits`):
  - tiles: 64 cache tokens a step, three stages deep, 4 warps (fastest at every point timed),
    smaller where the staged tiles do not fit a program's shared memory;
  - splits: one wave. A program's staged tiles decide how many programs a multiprocessor holds
    (one at 512+64 and 192+64, three at 96+64); the split count is the largest that keeps
    batch x head blocks x splits within those slots, so no program waits for a second wave
    (at Llama-3-8B B = 16, T = 32K: 8 splits, 0.220 ms; the earlier "two programs a
    multiprocessor", 17 splits = 2.06 waves: 0.249 ms). It was within 3% of the best count at
    13 of the 14 points of the split sweep, 12% off at the 14th (SmolLM2 96+64, B = 16, T = 8K);
  - merge traffic: every split writes an fp32 partial (heads x kv_lora_rank) and its LSE, which the
    merge reads back; a split must read enough cache that this stays small. A split covers at
    least MERGE_SHARE_INV times the tokens whose cache bytes equal its partial's bytes (write and
    read), so the partials cost at most 1/MERGE_SHARE_INV of the cache traffic (Llama-3-8B shape:
    32 heads x 512 fp32 = 64 KiB a split, x2, against 1,152 B a token: >= 456 tokens a split);
  - at most DEFAULT_MAX_SPLITS (64, the largest count the sweep timed) unless asked for more;
  - heads a program: all of a sequence's, up to 64, in 16-bit; at most FP32_HEAD_ELEMS / rank_pad
    in fp32 (16 at a 512 latent). fp32 takes `tl.dot` in "ieee" precision, which Hopper's tensor
    cores do not, so its operands are held in registers: compiled for sm_90 on the CPU
    (scripts/mla_compile_report.py, session 28, triton 3.6), stage 1 at 128 heads x 512+64 with
    64 heads a program framed a 19.8 KB stack a thread, 79 KB of spill stores, and took 38.5 s to
    compile (bf16 there: 2.3 KB, 2.4 s); 32 heads a program (Llama-3-8B) 13.2 KB and 11.2 s; 16
    heads a program 0.8 KB and 4-6 s. Session 28's GPU tests spent 86-88 s on each DeepSeek fp32 case.
    More head blocks read the cache more often (8 times at 128 heads); fp32 is the exactness
    path, not the served one, and its speed is not timed.
They are arguments of the op too (`num_splits`, `block_n`, `num_warps`, `num_stages`), not
constants baked into the kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from rearqa.kernels.launch import MIN_DOT, SMEM_BYTES, check_launch, check_pow2

H200_SMS = 132  # multiprocessors of the H200 (and H100 SXM); the interpreter has no device to ask
MAX_SPLITS = 256  # the most a caller may ask for
DEFAULT_MAX_SPLITS = 64  # the most the rule picks: the largest count the split sweep timed
MERGE_SHARE_INV = 4  # partials cost at most a quarter of the cache bytes a split reads
MAX_BLOCK_H = 64  # heads a program in 16-bit
FP32_HEAD_ELEMS = 16 * 512  # heads a program x rank_pad in fp32 (register-held operands: above)


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


SMEM_PER_SM = 233472  # a multiprocessor's (228 KiB), 1 KiB of it reserved per resident program
# (block_n, num_stages), best first: the session-16 H100 sweep (docs/kernels.md) found 64 tokens a
# step, three stages deep, fastest at all three points it timed; smaller where that does not fit
PIPELINES = ((64, 3), (32, 3), (32, 2), (16, 2), (16, 1))
DEFAULT_WARPS = 4  # fastest at all three sweep points (8 warps: 1-3% slower)


def staged_bytes(block_n: int, num_stages: int, rank_pad: int, rope_pad: int, itemsize: int,
                 block_h: int = 32) -> int:
    """Shared memory of the software pipeline, a model fitted to the compiler's refusals on the H100:
    each stage holds a latent and a rope tile (its count for 512+64 bf16, 32 heads, at 64 x 4
    stages was 262,144 B: the latent tiles alone; the rope tiles are counted here as a margin);
    with 64 heads a program it also stages a (64 x 256) block per stage (294,912 B at 64 x 3 bf16
    and at 32 x 3 fp32, both 128 heads), counted as 4 x block_h extra columns."""
    extra = 4 * block_h if block_h >= 64 else 0
    return num_stages * block_n * (rank_pad + rope_pad + extra) * itemsize


def default_pipeline(rank_pad: int, rope_pad: int, itemsize: int, block_n: int | None = None,
                     block_h: int = 32) -> tuple[int, int]:
    """The first of PIPELINES (with `block_n` when given) whose stages fit SMEM_BYTES."""
    for n, stages in PIPELINES:
        if block_n is not None and n != block_n:
            continue
        if staged_bytes(n, stages, rank_pad, rope_pad, itemsize, block_h) <= SMEM_BYTES:
            return n, stages
    return (block_n or 16), 1


def programs_per_sm(staged: int) -> int:
    """Programs a multiprocessor holds at once, by shared memory (the binding limit here)."""
    return max(1, SMEM_PER_SM // (staged + 1024))


def split_count(batch: int, head_blocks: int, max_len: int, block_n: int, heads: int, rank: int,
                rope: int, itemsize: int, sms: int = H200_SMS, per_sm: int = 1) -> int:
    """Splits per sequence: one wave of programs (sms x per_sm slots), no split shorter than the
    merge-traffic bound, at most DEFAULT_MAX_SPLITS."""
    one_wave = (sms * per_sm) // max(1, batch * head_blocks)
    partial_bytes = 2 * heads * (rank * 4 + 4)  # fp32 partial + LSE, written then read
    min_tokens = max(2 * block_n, MERGE_SHARE_INV * partial_bytes // ((rank + rope) * itemsize))
    by_length = math.ceil(max(1, max_len) / min_tokens)
    return max(1, min(one_wave, by_length, DEFAULT_MAX_SPLITS))


def choose_tiles(batch: int, heads: int, rank: int, rope: int, max_len: int, itemsize: int,
                 sms: int = H200_SMS, block_n: int | None = None,
                 num_splits: int | None = None, num_warps: int | None = None,
                 num_stages: int | None = None, block_h: int | None = None) -> DecodeTiles:
    """The tiles of one launch; `block_n`, `num_splits`, `num_warps`, `num_stages` and `block_h`
    (heads a program) override the defaults (the GPU sweep, scripts/kernel_bench.py --parts
    mla_sweep, sets the first four; scripts/mla_compile_report.py the last)."""
    rank_pad, rope_pad = max(MIN_DOT, next_pow2(rank)), max(MIN_DOT, next_pow2(rope))
    if block_h is None:
        cap = MAX_BLOCK_H if itemsize < 4 else min(MAX_BLOCK_H, max(MIN_DOT, FP32_HEAD_ELEMS // rank_pad))
        block_h = min(max(MIN_DOT, next_pow2(heads)), cap)
    check_pow2("block_h", block_h)
    head_blocks = math.ceil(heads / block_h)
    default_n, default_stages = default_pipeline(rank_pad, rope_pad, itemsize, block_n, block_h)
    block_n = block_n or default_n
    check_pow2("block_n", block_n)
    if num_splits is None:
        per_sm = programs_per_sm(staged_bytes(block_n, num_stages or default_stages, rank_pad, rope_pad,
                                              itemsize, block_h))
        num_splits = split_count(batch, head_blocks, max_len, block_n, heads, rank, rope, itemsize, sms, per_sm)
    if not 1 <= num_splits <= MAX_SPLITS:
        raise ValueError(f"num_splits={num_splits}: must be in 1..{MAX_SPLITS}")
    check_launch(num_warps, num_stages)
    return DecodeTiles(block_h, head_blocks, block_n, rank_pad, rope_pad, num_splits,
                       num_warps=num_warps or DEFAULT_WARPS, num_stages=num_stages or default_stages)
