"""A persistent, TMA-fed form of the fused LoRA kernel, for the benchmark (Hopper and later).

Session 20 measured the fused op's Triton GEMM core alone at 1.19-1.96x cuBLAS for M >= 4096
(docs/kernels.md): most of the fused op's distance from the 1.10x bar is the core's. This form
tries the two things a Hopper GEMM leans on that triton.py's kernel does not use:
- **TMA** (tensor descriptors, `triton.tools.tensor_descriptor.TensorDescriptor`): tiles are
  copied by the copy engine into shared memory instead of through per-thread pointer loads;
- **persistent programs**: one program per multiprocessor walks the output tiles (grouped
  GROUP_M rows of tiles at a time, so that neighbouring programs share x and W in L2), which
  hides the per-tile start and the epilogue of one tile under the next tile's loads.
The LoRA path is the same as triton.py's: x A^T (BLOCK_M x R) accumulated beside x W^T in the
tile's K loop, rounded to the input dtype, times s B^T before the one store; LORA=False gives the
GEMM core alone. Each tile recomputes x A^T: r / BLOCK_N extra MACs (12.5% at r = 16 and 128-wide
tiles). Not an op: nothing in the reader calls it; `scripts/kernel_bench.py --parts gemm` times it
against cuBLAS and against triton.py's kernel. Its limits are TMA's: 2-D operands with the last
stride 1, the other strides 16-byte aligned, and r padded up to 16 by the descriptor (zeros).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from rearqa.kernels.launch import check_launch, check_pow2
from rearqa.kernels.lora_linear.tiling import pad_rank


@triton.jit
def _tile_of(tile, grid_m, grid_n, GROUP_M: tl.constexpr):
    """(row block, column block) of the tile-th output tile, GROUP_M row blocks at a time."""
    in_group = GROUP_M * grid_n
    first_m = (tile // in_group) * GROUP_M
    rows = min(grid_m - first_m, GROUP_M)
    return first_m + (tile % in_group) % rows, (tile % in_group) // rows


@triton.jit
def _persistent_kernel(x_desc, w_desc, a_desc, b_desc, y_desc, bias, M, N, K, scaling,
                       LORA: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, RANK_PAD: tl.constexpr,
                       GROUP_M: tl.constexpr, NUM_PROGRAMS: tl.constexpr,
                       WARP_SPECIALIZE: tl.constexpr):
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    k_steps = tl.cdiv(K, BLOCK_K)
    dtype = y_desc.dtype
    for tile in tl.range(tl.program_id(0), grid_m * grid_n, NUM_PROGRAMS, flatten=True,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _tile_of(tile, grid_m, grid_n, GROUP_M)
        off_m, off_n = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        xa = tl.zeros([BLOCK_M, RANK_PAD], tl.float32)
        for ks in range(k_steps):
            off_k = ks * BLOCK_K
            xt = x_desc.load([off_m, off_k])  # (BLOCK_M, BLOCK_K); out of bounds: zeros
            acc = tl.dot(xt, w_desc.load([off_n, off_k]).T, acc)
            if LORA:
                xa = tl.dot(xt, a_desc.load([0, off_k]).T, xa)
        if LORA:  # x A^T rounded to the input dtype before B, as triton.py and PEFT do
            acc += scaling * tl.dot(xa.to(dtype), b_desc.load([off_n, 0]).T)
        if HAS_BIAS:
            offs_n = off_n + tl.arange(0, BLOCK_N)
            acc += tl.load(bias + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        y_desc.store([off_m, off_n], acc.to(dtype))


def lora_linear_persistent(x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor | None = None,
                           lora_b: torch.Tensor | None = None, bias: torch.Tensor | None = None, *,
                           scaling: float = 1.0, block_m: int = 128, block_n: int = 128,
                           block_k: int = 64, group_m: int = 8, num_warps: int = 8,
                           num_stages: int = 3, warp_specialize: bool = False,
                           programs: int | None = None) -> torch.Tensor:
    """y = x W^T + b + s (x A^T) B^T (lora_a and lora_b None: x W^T + b), x (..., K)."""
    lora = lora_a is not None
    if lora != (lora_b is not None):
        raise ValueError("give both lora_a and lora_b, or neither (the GEMM core alone)")
    for name, value in (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)):
        check_pow2(name, value)
    check_launch(num_warps, num_stages)
    n, k = weight.shape
    if x.shape[-1] != k:
        raise ValueError(f"x (..., {x.shape[-1]}) against weight {tuple(weight.shape)}")
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    rank = lora_a.shape[0] if lora else 0
    rank_pad = pad_rank(rank)
    operands = [x2, weight] + ([lora_a, lora_b] if lora else [])
    for t in operands:
        if t.dtype != x.dtype or t.stride(-1) != 1 or (t.stride(0) * t.element_size()) % 16 \
                or t.data_ptr() % 16:
            raise ValueError("TMA needs every operand in x's dtype, its last stride 1 and its row "
                             f"stride and address 16-byte aligned (x {tuple(x2.shape)}, K = {k}, "
                             f"N = {n}, r = {rank})")
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    if (y.stride(0) * y.element_size()) % 16:
        raise ValueError(f"TMA needs N * {y.element_size()} bytes a multiple of 16 (N = {n})")
    x_desc = TensorDescriptor.from_tensor(x2, [block_m, block_k])
    w_desc = TensorDescriptor.from_tensor(weight, [block_n, block_k])
    a_desc = TensorDescriptor.from_tensor(lora_a, [rank_pad, block_k]) if lora else w_desc
    b_desc = TensorDescriptor.from_tensor(lora_b, [block_n, rank_pad]) if lora else w_desc
    y_desc = TensorDescriptor.from_tensor(y, [block_m, block_n])
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    if programs is None:
        programs = torch.cuda.get_device_properties(x.device).multi_processor_count \
            if x.device.type == "cuda" else 4
    programs = max(1, min(programs, tiles))
    _persistent_kernel[(programs,)](
        x_desc, w_desc, a_desc, b_desc, y_desc, bias if bias is not None else y, m, n, k, float(scaling),
        LORA=lora, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        RANK_PAD=rank_pad, GROUP_M=group_m, NUM_PROGRAMS=programs, WARP_SPECIALIZE=warp_specialize,
        num_warps=num_warps, num_stages=num_stages)
    return y.view(*x.shape[:-1], n)
