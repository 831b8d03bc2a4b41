"""Fused LoRA linear in Triton: the base GEMM and the low-rank path in one pass over x.

A program owns N_TILES (BLOCK_M, BLOCK_N) tiles of y side by side. The first tile's K loop loads
each x tile once and feeds two products: acc += x W^T (the base) and xa += x A^T (BLOCK_M x r,
kept in registers). After the loop, acc += (s xa) B^T for the tile's columns, then the bias, one
store (EARLY_B: B's and the bias's tiles are loaded before the K loop instead, the same sums, for
decode, where the kernel waits on memory round trips); the program's other tiles run the base
product alone and reuse xa. B A is never formed and x A^T never leaves the chip (cf. Punica's /
S-LoRA's batched LoRA kernels, which split the two products into separate launches). Forward
only: training runs PEFT's LoRA layers, whose backward torch provides (docs/kernels.md).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from rearqa.kernels.launch import SMEM_BYTES
from rearqa.kernels.lora_linear.tiling import choose_tiles


@triton.jit
def _x_tile(x, offs_m, offs_k, m_ok, k_ok, s_xm, s_xk):
    """x's (BLOCK_M, BLOCK_K) tile, zeros outside."""
    return tl.load(x + offs_m[:, None] * s_xm + offs_k[None, :] * s_xk,
                   mask=m_ok[:, None] & k_ok[None, :], other=0.0)


@triton.jit
def _t_tile(w, offs_n, offs_k, n_ok, k_ok, s_wn, s_wk):
    """The (BLOCK_K, width) tile of a (rows, K) matrix read transposed (W^T, A^T), zeros outside."""
    return tl.load(w + offs_n[None, :] * s_wn + offs_k[:, None] * s_wk,
                   mask=n_ok[None, :] & k_ok[:, None], other=0.0)


@triton.jit
def _tile_product(x, w, offs_m, offs_n, m_ok, n_ok, K, s_xm, s_xk, s_wn, s_wk, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """x W^T for one (BLOCK_M, BLOCK_N) tile in fp32, over K in BLOCK_K steps (W: (rows, K); A too)."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        acc = tl.dot(_x_tile(x, offs_m, offs_k, m_ok, k_ok, s_xm, s_xk),
                     _t_tile(w, offs_n, offs_k, n_ok, k_ok, s_wn, s_wk), acc=acc, input_precision=PRECISION)
    return acc


@triton.jit
def _b_and_bias(b, bias, offs_n, offs_r, n_ok, r_ok, s_bn, s_br, HAS_BIAS: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """One column tile's B^T (RANK_PAD, BLOCK_N) and its bias in fp32 (zeros without one)."""
    bt = tl.load(b + offs_n[None, :] * s_bn + offs_r[:, None] * s_br,
                 mask=n_ok[None, :] & r_ok[:, None], other=0.0)
    if HAS_BIAS:
        bias_t = tl.load(bias + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    else:
        bias_t = tl.zeros([BLOCK_N], tl.float32)  # not added: the caller checks HAS_BIAS
    return bt, bias_t


@triton.jit
def _lora_kernel(x, w, a, b, bias, y, M, N, K, rank, scaling,
                 s_xm, s_xk, s_wn, s_wk, s_ar, s_ak, s_bn, s_br, s_ym, s_yn,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, RANK_PAD: tl.constexpr, N_TILES: tl.constexpr,
                 PRECISION: tl.constexpr, EARLY_B: tl.constexpr):
    pid = tl.program_id(0)
    groups_n = tl.cdiv(N, BLOCK_N * N_TILES)
    pid_m, pid_g = pid // groups_n, pid % groups_n  # neighbours share the x row block (in L2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, RANK_PAD)
    m_ok, r_ok = offs_m < M, offs_r < rank
    xa = tl.zeros([BLOCK_M, RANK_PAD], tl.float32)
    for t in tl.static_range(N_TILES):  # unrolled: `t == 0` below is decided at compile time
        offs_n = (pid_g * N_TILES + t) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        if EARLY_B:  # B's and the bias's loads issued before the K loop: their latency hides under it
            bt, bias_t = _b_and_bias(b, bias, offs_n, offs_r, n_ok, r_ok, s_bn, s_br, HAS_BIAS, BLOCK_N)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            xt = _x_tile(x, offs_m, offs_k, m_ok, k_ok, s_xm, s_xk)  # (BLOCK_M, BLOCK_K)
            wt = _t_tile(w, offs_n, offs_k, n_ok, k_ok, s_wn, s_wk)  # (BLOCK_K, BLOCK_N) = W^T
            acc = tl.dot(xt, wt, acc=acc, input_precision=PRECISION)
            if t == 0:  # the first tile's K loop also computes x A^T, which the others reuse
                at = _t_tile(a, offs_r, offs_k, r_ok, k_ok, s_ar, s_ak)  # (BLOCK_K, RANK_PAD) = A^T
                xa = tl.dot(xt, at, acc=xa, input_precision=PRECISION)
        if not EARLY_B:  # after the K loop (the sweeps' defaults were timed this way)
            bt, bias_t = _b_and_bias(b, bias, offs_n, offs_r, n_ok, r_ok, s_bn, s_br, HAS_BIAS, BLOCK_N)
        # x A^T rounded to the input dtype before B, as the unfused path (and PEFT) does
        acc += scaling * tl.dot(xa.to(bt.dtype), bt, input_precision=PRECISION)
        if HAS_BIAS:
            acc += bias_t[None, :]
        tl.store(y + offs_m[:, None] * s_ym + offs_n[None, :] * s_yn, acc.to(y.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])


def shared_memory(device: torch.device) -> int:
    """Shared memory a program may opt into on `device` (sm_90's where torch does not say)."""
    if device.type != "cuda":  # the interpreter: no limit of its own, the GPU's is the one that matters
        return SMEM_BYTES
    return getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", SMEM_BYTES)


def lora_linear_triton(x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor,
                       lora_b: torch.Tensor, bias: torch.Tensor | None = None, *,
                       scaling: float = 1.0, block_m: int | None = None,
                       block_n: int | None = None, block_k: int | None = None,
                       num_warps: int | None = None, num_stages: int | None = None,
                       n_tiles: int | None = None, early_b: bool | None = None) -> torch.Tensor:
    """The kernel behind `lora_linear` (shapes: reference.lora_linear_reference); the tile knobs
    override tiling.choose_tiles' defaults (the GPU sweep sets them)."""
    n, k = weight.shape
    rank = lora_a.shape[0]
    if x.shape[-1] != k or lora_a.shape != (rank, k) or lora_b.shape != (n, rank):
        raise ValueError(f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, lora_a "
                         f"{tuple(lora_a.shape)}, lora_b {tuple(lora_b.shape)}: expected (..., K), "
                         "(N, K), (r, K), (N, r)")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias {tuple(bias.shape)}: expected ({n},)")
    if len({x.dtype, weight.dtype, lora_a.dtype, lora_b.dtype}) != 1 or \
            x.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError("x, weight, lora_a and lora_b must share one dtype: bf16, fp16 or fp32")
    rows = x.reshape(-1, k)  # a view where x's leading dims allow it
    m = rows.shape[0]
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    tiles = choose_tiles(m, rank, itemsize=x.element_size(), smem_bytes=shared_memory(x.device),
                         block_m=block_m, block_n=block_n, block_k=block_k,
                         num_warps=num_warps, num_stages=num_stages, n_tiles=n_tiles, early_b=early_b)
    grid = (triton.cdiv(m, tiles.block_m) * triton.cdiv(n, tiles.block_n * tiles.n_tiles),)
    _lora_kernel[grid](rows, weight, lora_a, lora_b, bias if bias is not None else weight, y,
                       m, n, k, rank, float(scaling), *rows.stride(), *weight.stride(),
                       *lora_a.stride(), *lora_b.stride(), *y.stride(),
                       HAS_BIAS=bias is not None, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n,
                       BLOCK_K=tiles.block_k, RANK_PAD=tiles.rank_pad, N_TILES=tiles.n_tiles,
                       PRECISION="ieee" if x.dtype == torch.float32 else "tf32", EARLY_B=tiles.early_b,
                       num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return y.view(*x.shape[:-1], n)
