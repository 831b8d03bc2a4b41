"""The fused LoRA kernel's GEMM core alone, for the benchmark: y = x W^T in Triton.

The same program layout, loads, tiles and launch knobs as triton.py's kernel without the low-rank
path, so that `scripts/kernel_bench.py --parts gemm` can split the fused op's distance from cuBLAS
into what the Triton GEMM core costs and what the low-rank path adds. Not an op: nothing in the
reader calls it (CUDA and triton only).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from rearqa.kernels.lora_linear.tiling import choose_tiles
from rearqa.kernels.lora_linear.triton import _tile_product, shared_memory


@triton.jit
def _gemm_kernel(x, w, y, M, N, K, s_xm, s_xk, s_wn, s_wk, s_ym, s_yn,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    groups_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = pid // groups_n, pid % groups_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = offs_m < M, offs_n < N
    acc = _tile_product(x, w, offs_m, offs_n, m_ok, n_ok, K, s_xm, s_xk, s_wn, s_wk,
                        BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
    tl.store(y + offs_m[:, None] * s_ym + offs_n[None, :] * s_yn, acc.to(y.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def gemm_triton(x: torch.Tensor, weight: torch.Tensor, *, block_m: int | None = None,
                block_n: int | None = None, block_k: int | None = None, num_warps: int | None = None,
                num_stages: int | None = None) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T at the fused kernel's default tiles for M, or the ones given; the
    stages and K step not given are fitted to the device's shared memory as the core needs it."""
    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k or x.dtype != weight.dtype:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype}, weight {tuple(weight.shape)} {weight.dtype}: "
                         "expected (M, K) and (N, K) of one dtype")
    tiles = choose_tiles(m, 16, itemsize=x.element_size(), smem_bytes=shared_memory(x.device), lora=False,
                         block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps,
                         num_stages=num_stages)
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(m, tiles.block_m) * triton.cdiv(n, tiles.block_n),)
    _gemm_kernel[grid](x, weight, y, m, n, k, *x.stride(), *weight.stride(), *y.stride(),
                       BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                       PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
                       num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return y
