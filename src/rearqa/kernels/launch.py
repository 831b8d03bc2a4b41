"""Checks of a Triton launch's tile knobs, shared by the ops' tiling modules (torch- and triton-free)."""
from __future__ import annotations

MIN_DOT = 16  # tl.dot needs every dimension >= 16
SMEM_BYTES = 232448  # shared memory a program may use on sm_90 (H100 / H200: 227 KiB)


def check_pow2(name: str, value: int) -> None:
    """A tile width: a power of two of at least MIN_DOT."""
    if value < MIN_DOT or value & (value - 1):
        raise ValueError(f"{name}={value}: must be a power of two >= {MIN_DOT}")


def check_launch(num_warps: int | None, num_stages: int | None) -> None:
    """Warps and pipeline stages a launch may ask for (None: the op's default, not checked here)."""
    if num_warps is not None and num_warps not in (1, 2, 4, 8, 16):
        raise ValueError(f"num_warps={num_warps}: must be one of 1, 2, 4, 8, 16")
    if num_stages is not None and not 1 <= num_stages <= 6:
        raise ValueError(f"num_stages={num_stages}: must be in 1..6")
