"""A decode form of the fused LoRA kernel with x A^T out of the K loop, for the benchmark.

At decode (M <= 64 rows: one row block) triton.py's kernel is 1.12-1.47x the base GEMM
(docs/kernels.md "Session 20"): each program owns a 16-wide column tile and computes x A^T again in
its K loop, so it reads A (r x K) beside its slice of W, as large as that slice at r = 16, and
carries a second dot. This form gives x A^T to one program of its own. Program 0 computes it
(BLOCK_M x r, rounded to the input dtype as triton.py does), stores it to a scratch buffer and
raises a flag. The other programs each run one column tile's base K loop, wait on the flag, then
add s (x A^T) B^T for their columns in the epilogue. The last of them to finish clears the flag and
its counter, so the next call starts from zero (a CUDA graph replays it as it is).

- **Co-residency:** the programs wait on each other within one launch, so every program must be
  resident at once. The launch has 1 + N / BLOCK_N programs (at most 97 for the reader's shapes).
  It is refused when that exceeds the multiprocessor count. Program 0 is the producer, so
  Triton's CPU interpreter, which runs programs in order, never waits.
- **One stream:** the flag and its counter are one buffer per device, so two calls must not run
  at once on two streams.
- **The sums:** x A^T and x W^T run in the same K order and tiles as triton.py's, so the output
  equals that kernel's at the same BLOCK_K. The interpreter test checks it bit for bit.
- **Scope:** not an op, and nothing in the reader calls it. `scripts/kernel_bench.py --parts split`
  checks and times it at decode beside the core alone (gpu-plan item 2e), to tell whether moving
  x A^T out of the K loop brings the fused op to the bar there.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from rearqa.kernels.lora_linear.tiling import pad_rank
from rearqa.kernels.lora_linear.triton import _b_and_bias, _tile_product

MAX_ROWS = 64  # one row block: the decode rows of the bar (M = 1, 16, 64)
_SYNC: dict[torch.device, torch.Tensor] = {}  # per device: [flag, programs done], zero between calls


@triton.jit
def _split_kernel(x, w, a, b, bias, y, xa_buf, sync, M, N, K, rank, scaling,
                  s_xm, s_xk, s_wn, s_wk, s_ar, s_ak, s_bn, s_br, s_ym, s_yn,
                  HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr, RANK_PAD: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, RANK_PAD)
    m_ok, r_ok = offs_m < M, offs_r < rank
    xa_at = xa_buf + offs_m[:, None] * RANK_PAD + offs_r[None, :]
    if pid == 0:  # the producer: x A^T for every row, then the flag
        xa = _tile_product(x, a, offs_m, offs_r, m_ok, r_ok, K, s_xm, s_xk, s_ar, s_ak,
                           BLOCK_M, RANK_PAD, BLOCK_K, PRECISION)
        tl.store(xa_at, xa.to(xa_buf.dtype.element_ty))  # rounded as triton.py rounds it
        # every thread's stores before the one thread's release: a barrier, then the flag (the
        # release is cumulative over what the barrier ordered before it)
        tl.debug_barrier()
        tl.atomic_xchg(sync, 1, sem="release", scope="gpu")
    else:  # a column tile: the base product, then the low-rank product once the flag is up
        offs_n = (pid - 1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        bt, bias_t = _b_and_bias(b, bias, offs_n, offs_r, n_ok, r_ok, s_bn, s_br, HAS_BIAS, BLOCK_N)
        acc = _tile_product(x, w, offs_m, offs_n, m_ok, n_ok, K, s_xm, s_xk, s_wn, s_wk,
                            BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        flag = tl.atomic_add(sync, 0, sem="acquire", scope="gpu")
        while flag == 0:
            flag = tl.atomic_add(sync, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()  # the one thread's acquire before every thread's read of x A^T
        xa_t = tl.load(xa_at, cache_modifier=".cg")  # from L2: written by another multiprocessor
        acc += scaling * tl.dot(xa_t, bt, input_precision=PRECISION)
        if HAS_BIAS:
            acc += bias_t[None, :]
        tl.store(y + offs_m[:, None] * s_ym + offs_n[None, :] * s_yn, acc.to(y.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])
        done = tl.atomic_add(sync + 1, 1, sem="acq_rel", scope="gpu")
        if done == tl.num_programs(0) - 2:  # the last column tile: every other one is past the flag
            tl.atomic_xchg(sync + 1, 0, sem="relaxed", scope="gpu")
            tl.atomic_xchg(sync, 0, sem="release", scope="gpu")


def _sync(device: torch.device) -> torch.Tensor:
    if device not in _SYNC:
        _SYNC[device] = torch.zeros(2, dtype=torch.int32, device=device)
    return _SYNC[device]


def lora_linear_split(x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor,
                      lora_b: torch.Tensor, bias: torch.Tensor | None = None, *, scaling: float = 1.0,
                      block_n: int = 16, block_k: int = 128, num_warps: int = 4,
                      num_stages: int = 4) -> torch.Tensor:
    """y = x W^T + b + s (x A^T) B^T for x (M <= 64, K), x A^T computed by one program of its own."""
    m, k = x.shape
    n, rank = weight.shape[0], lora_a.shape[0]
    if weight.shape[1] != k or lora_a.shape != (rank, k) or lora_b.shape != (n, rank):
        raise ValueError(f"x {tuple(x.shape)}, weight {tuple(weight.shape)}, lora_a {tuple(lora_a.shape)}, "
                         f"lora_b {tuple(lora_b.shape)}: expected (M, K), (N, K), (r, K), (N, r)")
    if not 1 <= m <= MAX_ROWS:
        raise ValueError(f"{m} rows: the split form is for decode, 1 to {MAX_ROWS} rows (one row block)")
    if len({x.dtype, weight.dtype, lora_a.dtype, lora_b.dtype}) != 1:
        raise ValueError("x, weight, lora_a and lora_b must share one dtype")
    programs = 1 + triton.cdiv(n, block_n)
    if x.device.type == "cuda":
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        if programs > sms:
            raise ValueError(f"{programs} programs at block_n {block_n} exceed the {sms} multiprocessors: "
                             "the programs wait on each other, so all must be resident; widen block_n")
    block_m = max(16, triton.next_power_of_2(m))
    rank_pad = pad_rank(rank)
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    xa_buf = torch.empty(block_m, rank_pad, device=x.device, dtype=x.dtype)
    _split_kernel[(programs,)](x, weight, lora_a, lora_b, bias if bias is not None else weight, y, xa_buf,
                               _sync(x.device), m, n, k, rank, float(scaling), *x.stride(), *weight.stride(),
                               *lora_a.stride(), *lora_b.stride(), *y.stride(), HAS_BIAS=bias is not None,
                               BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, RANK_PAD=rank_pad,
                               PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
                               num_warps=num_warps, num_stages=num_stages)
    return y
