"""Tile choice of the fused LoRA kernel by the row count M (torch- and triton-free).

Decode (M <= 64) reads the weight once and is bound by its bytes: small row tiles and narrow
column tiles spread the weight over more programs. Prefill and training shapes (M in the
thousands) are GEMMs. The low-rank product x A^T is computed once per program and reused for its
`n_tiles` column tiles (the first column tile's K loop computes it beside the base product), so
it costs r / (n_tiles x BLOCK_N) extra work (25% of the base FLOPs at r = 16 with one 64-wide
tile); the price of not writing x A^T out and reading it back (which would cost as many bytes as
reading x again). Every knob is an argument of the op too. The defaults are the fastest
combinations of the sweeps on an H100 (scripts/kernel_bench.py --parts lora_sweep): M > 64 from
session 18's (docs/kernels.md "Session 18"), M <= 64 from session 20's, timed without the launch
("Session 20"), where wider column tiles and more column tiles a program lost. A default whose
pipeline does not fit the device's shared memory (fp32 at a rank above 32: 64x16x128 four stages
deep asks 237,568 B of sm_90's 232,448; bf16 at rank 128) runs with fewer stages, then a shorter
K step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from rearqa.kernels.launch import MIN_DOT, SMEM_BYTES, check_launch, check_pow2


@dataclass(frozen=True)
class LoraTiles:
    block_m: int
    block_n: int
    block_k: int
    rank_pad: int  # the LoRA rank padded to a power of two >= 16 (masked loads)
    num_warps: int
    num_stages: int
    n_tiles: int = 1  # column tiles a program computes in turn, sharing one x A^T
    early_b: bool = False  # load B's and the bias's tile before the K loop instead of after it


def pad_rank(rank: int) -> int:
    """The LoRA rank padded to a power of two of at least MIN_DOT (tl.dot's smallest side)."""
    return max(MIN_DOT, 1 << max(0, (rank - 1).bit_length()))


def staged_bytes(tiles: LoraTiles, itemsize: int, lora: bool = True) -> int:
    """Shared memory of one program as the compiler for sm_90 lays it out for a launch, which
    specializes the kernel on its arguments (unit strides become constants; pointers, strides and
    sizes that are multiples of 16 are marked so): tests/kernels/test_compile_sm90.py compiles it
    that way and checks this model against the compiler's count.
      - K steps: fp32 tiles (no tensor-core pipeline) keep num_stages - 1 buffers of one K step's
        x, W and A tiles; 16-bit tiles keep num_stages of them (the wgmma pipeline; the smallest
        tiles keep one fewer), so for 16-bit inputs this is an upper bound.
      - The fp32 (BLOCK_M, RANK_PAD) x A^T passed through shared memory before its product with B;
        with early_b, B's (RANK_PAD, BLOCK_N) tile too, held there across the loop.
    Exact for the fp32 tiles compiled (the defaults at ranks 8 and 64, with and without early_b).
    Session 24's GPU run showed the 16-bit count of an unspecialized compile (num_stages - 1, or
    one buffer) to be too low: a 128 x 256 GEMM-core tile three stages deep asked 294,912 bytes.
    `lora=False` is the GEMM core alone (lora_linear/gemm.py): no A tile and no x A^T."""
    rank = tiles.rank_pad if lora else 0
    k_step = (tiles.block_m + tiles.block_n + rank) * tiles.block_k * itemsize
    buffers = tiles.num_stages - 1 if itemsize >= 4 else tiles.num_stages
    held_b = tiles.rank_pad * tiles.block_n * itemsize if lora and tiles.early_b else 0
    return max(1, buffers) * k_step + (tiles.block_m * tiles.rank_pad * 4 if lora else 0) + held_b


def choose_tiles(rows: int, rank: int, *, itemsize: int = 2, smem_bytes: int = SMEM_BYTES,
                 block_m: int | None = None, block_n: int | None = None,
                 block_k: int | None = None, num_warps: int | None = None,
                 num_stages: int | None = None, n_tiles: int | None = None,
                 early_b: bool | None = None, lora: bool = True) -> LoraTiles:
    """The tiles of one launch for `itemsize`-byte inputs on a device whose programs may use
    `smem_bytes` of shared memory; the keyword arguments override the defaults (checked). Only
    the defaults are fitted to the shared memory: a knob given is used as given (staged_bytes is an
    upper bound for 16-bit inputs, so a refusal here could refuse a tile that compiles). `lora=False`
    fits the GEMM core's tiles (no low-rank path) instead."""
    rank_pad = pad_rank(rank)
    # narrow column tiles for decode, 64-wide tiles with one column tile a program for the GEMM rows
    if rows <= 16:
        base = LoraTiles(16, 16, 128, rank_pad, 4, 4)
    elif rows <= 64:
        base = LoraTiles(64, 16, 128, rank_pad, 4, 4)
    elif rows < 16384:
        base = LoraTiles(64, 64, 64, rank_pad, 4, 3)
    else:
        base = LoraTiles(128, 64, 64, rank_pad, 4, 3)
    tiles = LoraTiles(block_m or base.block_m, block_n or base.block_n, block_k or base.block_k,
                      rank_pad, num_warps or base.num_warps, num_stages or base.num_stages,
                      n_tiles or base.n_tiles, base.early_b if early_b is None else bool(early_b))
    while staged_bytes(tiles, itemsize, lora) > smem_bytes:  # fewer stages (not below 2), then a shorter K step
        if num_stages is None and tiles.num_stages > 2:
            tiles = replace(tiles, num_stages=tiles.num_stages - 1)
        elif block_k is None and tiles.block_k > 2 * MIN_DOT:
            tiles = replace(tiles, block_k=tiles.block_k // 2)
        else:
            break
    for name in ("block_m", "block_n", "block_k"):
        check_pow2(name, getattr(tiles, name))
    check_launch(tiles.num_warps, tiles.num_stages)
    if not 1 <= tiles.n_tiles <= 8:
        raise ValueError(f"n_tiles={tiles.n_tiles}: must be in 1..8")
    return tiles
