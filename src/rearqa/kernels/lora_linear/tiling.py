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
("Session 20"), where wider column tiles and more column tiles a program lost.
"""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.kernels.launch import MIN_DOT, check_launch, check_pow2


@dataclass(frozen=True)
class LoraTiles:
    block_m: int
    block_n: int
    block_k: int
    rank_pad: int  # the LoRA rank padded to a power of two >= 16 (masked loads)
    num_warps: int
    num_stages: int
    n_tiles: int = 1  # column tiles a program computes in turn, sharing one x A^T


def pad_rank(rank: int) -> int:
    """The LoRA rank padded to a power of two of at least MIN_DOT (tl.dot's smallest side)."""
    return max(MIN_DOT, 1 << max(0, (rank - 1).bit_length()))


def choose_tiles(rows: int, rank: int, *, block_m: int | None = None, block_n: int | None = None,
                 block_k: int | None = None, num_warps: int | None = None,
                 num_stages: int | None = None, n_tiles: int | None = None) -> LoraTiles:
    """The tiles of one launch; the keyword arguments override the defaults (checked)."""
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
                      n_tiles or base.n_tiles)
    for name in ("block_m", "block_n", "block_k"):
        check_pow2(name, getattr(tiles, name))
    check_launch(tiles.num_warps, tiles.num_stages)
    if not 1 <= tiles.n_tiles <= 8:
        raise ValueError(f"n_tiles={tiles.n_tiles}: must be in 1..8")
    return tiles
