"""Tile choice of the fused LoRA kernel by the row count M (torch- and triton-free).

Decode (M <= 64) reads the weight once and is bound by its bytes: small row tiles and narrow
column tiles spread the weight over more programs. Prefill and training shapes (M in the
thousands) are GEMMs: 128 x 128 tiles. The low-rank product x A^T is redone by every column tile
of a row block, r / BLOCK_N extra work (16 / 128 = 12.5% of the base FLOPs at r = 16), the price
of not writing x A^T out and reading it back (which would cost as many bytes as reading x again).
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_DOT = 16


@dataclass(frozen=True)
class LoraTiles:
    block_m: int
    block_n: int
    block_k: int
    rank_pad: int  # the LoRA rank padded to a power of two >= 16 (masked loads)
    num_warps: int
    num_stages: int


def choose_tiles(rows: int, rank: int) -> LoraTiles:
    rank_pad = max(MIN_DOT, 1 << max(0, (rank - 1).bit_length()))
    if rows <= 16:
        return LoraTiles(16, 32, 128, rank_pad, 4, 4)
    if rows <= 64:
        return LoraTiles(64, 64, 64, rank_pad, 4, 4)
    return LoraTiles(128, 128, 64, rank_pad, 8, 3)
