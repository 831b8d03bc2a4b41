"""MLA absorbed decode in Triton: split-KV (flash-decoding) over a latent cache, merged by LSE.

Stage 1, grid (batch, splits, head blocks): a program takes all heads of one sequence (up to 64;
9 or 32 in our shapes, padded to 16 / 32 rows) against one chunk of that sequence's cache, so the
cache is read once for every head (MQA: one latent "head"). Per BLOCK_N tokens it loads the latent
tile c (BLOCK_N, r) and the rotary key tile (BLOCK_N, p), forms q_lat c^T + q_rope k_rope^T on the
tensor cores, runs an online softmax in base 2 (the scale carries log2 e) and accumulates
p c (the latent is also the value) in fp32. It writes the chunk's normalised output and its
log-sum-exp. Stage 2, grid (batch, heads), merges the chunks: out = sum_s 2^(lse_s - M) o_s /
sum_s 2^(lse_s - M). Widths that are not powers of two are padded inside the tiles with masked
loads; the cache stays unpadded. A paged cache (vLLM's block table) differs only in where a
token's row is: page = block_table[b, n // page_size], row n % page_size.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from rearqa.kernels.mla_decode.tiling import H200_SMS, choose_tiles

LOG2E = 1.4426950408889634


@triton.jit
def _split_kernel(q_lat, q_rope, latent, k_rope, seq_lens, block_table, kv_mask, part_out, part_lse,
                  s_qb, s_qh, s_qr, s_pb, s_ph, s_pp, s_cg, s_cn, s_cr, s_kg, s_kn, s_kp,
                  s_tb, s_tn, s_mb, s_mn, s_ob, s_oh, s_os, s_lb, s_lh,
                  heads, num_splits, page_size, scale_log2,
                  RANK: tl.constexpr, ROPE: tl.constexpr, RANK_PAD: tl.constexpr,
                  ROPE_PAD: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                  PAGED: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    b = tl.program_id(0)
    split = tl.program_id(1)
    offs_h = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_r = tl.arange(0, RANK_PAD)
    offs_p = tl.arange(0, ROPE_PAD)
    h_ok, r_ok, p_ok = offs_h < heads, offs_r < RANK, offs_p < ROPE
    q = tl.load(q_lat + b * s_qb + offs_h[:, None] * s_qh + offs_r[None, :] * s_qr,
                mask=h_ok[:, None] & r_ok[None, :], other=0.0)  # (BLOCK_H, RANK_PAD)
    qp = tl.load(q_rope + b * s_pb + offs_h[:, None] * s_ph + offs_p[None, :] * s_pp,
                 mask=h_ok[:, None] & p_ok[None, :], other=0.0)  # (BLOCK_H, ROPE_PAD)

    # This split's tokens: the sequence's tiles shared out evenly, so lengths may differ per row.
    seq_len = tl.load(seq_lens + b).to(tl.int32)
    per_split = tl.cdiv(tl.cdiv(seq_len, BLOCK_N), num_splits) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, RANK_PAD], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < end
        if PAGED:
            group = tl.load(block_table + b * s_tb + (offs_n // page_size) * s_tn, mask=n_ok, other=0)
            row = offs_n % page_size
        else:  # a contiguous cache is the paged one with one page per sequence
            group = tl.zeros([BLOCK_N], tl.int32) + b
            row = offs_n
        group = group.to(tl.int64)
        c = tl.load(latent + group[:, None] * s_cg + row[:, None] * s_cn + offs_r[None, :] * s_cr,
                    mask=n_ok[:, None] & r_ok[None, :], other=0.0)  # (BLOCK_N, RANK_PAD)
        kr = tl.load(k_rope + group[:, None] * s_kg + row[:, None] * s_kn + offs_p[None, :] * s_kp,
                     mask=n_ok[:, None] & p_ok[None, :], other=0.0)  # (BLOCK_N, ROPE_PAD)
        qk = tl.dot(q, tl.trans(c), input_precision=PRECISION)
        qk = tl.dot(qp, tl.trans(kr), acc=qk, input_precision=PRECISION) * scale_log2  # (BLOCK_H, BLOCK_N)
        keep = n_ok
        if HAS_MASK:
            keep = keep & (tl.load(kv_mask + b * s_mb + offs_n * s_mn, mask=n_ok, other=0) != 0)
        qk = tl.where(keep[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no -inf - -inf while all masked
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(c.dtype), c, input_precision=PRECISION)
        m_i = m_new

    lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))  # empty: no weight
    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(part_out + b * s_ob + offs_h[:, None] * s_oh + split * s_os + offs_r[None, :], o,
             mask=h_ok[:, None] & r_ok[None, :])
    tl.store(part_lse + b * s_lb + offs_h * s_lh + split, lse, mask=h_ok)


@triton.jit
def _merge_kernel(part_out, part_lse, out, num_splits, s_ob, s_oh, s_os, s_lb, s_lh, s_yb, s_yh, s_yr,
                  RANK: tl.constexpr, RANK_PAD: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_r = tl.arange(0, RANK_PAD)
    r_ok = offs_r < RANK
    m = tl.full([1], float("-inf"), tl.float32)
    denom = tl.zeros([1], tl.float32)
    acc = tl.zeros([RANK_PAD], tl.float32)
    for s in range(0, num_splits):
        lse = tl.load(part_lse + b * s_lb + h * s_lh + s + tl.arange(0, 1))  # (1,)
        o = tl.load(part_out + b * s_ob + h * s_oh + s * s_os + offs_r, mask=r_ok, other=0.0)
        m_new = tl.maximum(m, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m - m_safe)
        weight = tl.exp2(lse - m_safe)
        acc = acc * alpha + weight * o
        denom = denom * alpha + weight
        m = m_new
    y = acc / tl.where(denom > 0, denom, 1.0)  # a row with every key masked: zeros
    tl.store(out + b * s_yb + h * s_yh + offs_r * s_yr, y.to(out.dtype.element_ty), mask=r_ok)


def _check(q_lat, q_rope, latent, k_rope, seq_lens, block_table, kv_mask) -> None:
    if q_lat.dim() != 3 or q_rope.dim() != 3 or q_lat.shape[:2] != q_rope.shape[:2]:
        raise ValueError(f"q_lat {tuple(q_lat.shape)} and q_rope {tuple(q_rope.shape)}: expected "
                         "(B, H, r) and (B, H, p)")
    if latent.dim() != 3 or k_rope.dim() != 3 or latent.shape[:2] != k_rope.shape[:2]:
        raise ValueError(f"latent {tuple(latent.shape)} and k_rope {tuple(k_rope.shape)}: expected "
                         "(B, S, r) and (B, S, p), or (num_blocks, page, r) and (num_blocks, page, p)")
    if latent.shape[-1] != q_lat.shape[-1] or k_rope.shape[-1] != q_rope.shape[-1]:
        raise ValueError(f"widths differ: q_lat {q_lat.shape[-1]} vs latent {latent.shape[-1]}, "
                         f"q_rope {q_rope.shape[-1]} vs k_rope {k_rope.shape[-1]}")
    if len({q_lat.dtype, q_rope.dtype, latent.dtype, k_rope.dtype}) != 1:
        raise ValueError("q_lat, q_rope, latent and k_rope must share one dtype (bf16, fp16 or fp32)")
    if q_lat.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"dtype {q_lat.dtype}: the kernel takes bf16, fp16 or fp32")
    if seq_lens.shape != (q_lat.shape[0],) or seq_lens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"seq_lens {tuple(seq_lens.shape)} {seq_lens.dtype}: expected ({q_lat.shape[0]},) int")
    if block_table is None and latent.shape[0] != q_lat.shape[0]:
        raise ValueError(f"contiguous cache of {latent.shape[0]} sequences for a batch of {q_lat.shape[0]}")
    if block_table is not None and (block_table.dim() != 2 or block_table.shape[0] != q_lat.shape[0]):
        raise ValueError(f"block_table {tuple(block_table.shape)}: expected (B, max_blocks)")
    if kv_mask is not None and (kv_mask.dim() != 2 or kv_mask.shape[0] != q_lat.shape[0]):
        raise ValueError(f"kv_mask {tuple(kv_mask.shape)}: expected (B, >= S) bool")


def mla_decode_triton(q_lat: torch.Tensor, q_rope: torch.Tensor, latent: torch.Tensor,
                      k_rope: torch.Tensor, seq_lens: torch.Tensor,
                      block_table: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None,
                      *, scale: float, num_splits: int | None = None,
                      block_n: int | None = None, num_warps: int | None = None,
                      num_stages: int | None = None) -> torch.Tensor:
    """The kernel behind `mla_decode` (shapes and meaning: reference.mla_decode_reference).
    seq_lens[b] must not exceed the cache's capacity (S, or max_blocks * page): not checked, since
    reading it would synchronise the device."""
    _check(q_lat, q_rope, latent, k_rope, seq_lens, block_table, kv_mask)
    batch, heads, rank = q_lat.shape
    rope, paged = q_rope.shape[-1], block_table is not None
    capacity = block_table.shape[1] * latent.shape[1] if paged else latent.shape[1]
    sms = torch.cuda.get_device_properties(q_lat.device).multi_processor_count if q_lat.is_cuda else H200_SMS
    tiles = choose_tiles(batch, heads, rank, rope, capacity, q_lat.element_size(), sms, block_n, num_splits,
                         num_warps, num_stages)
    part_out = torch.empty(batch, heads, tiles.num_splits, rank, device=q_lat.device, dtype=torch.float32)
    part_lse = torch.empty(batch, heads, tiles.num_splits, device=q_lat.device, dtype=torch.float32)
    out = torch.empty(batch, heads, rank, device=q_lat.device, dtype=q_lat.dtype)
    table = block_table if paged else seq_lens  # a placeholder pointer when unused
    table_strides = block_table.stride() if paged else (0, 0)
    mask = kv_mask.view(torch.uint8) if kv_mask is not None and kv_mask.dtype == torch.bool else kv_mask
    mask_strides = mask.stride() if mask is not None else (0, 0)
    _split_kernel[(batch, tiles.num_splits, tiles.head_blocks)](
        q_lat, q_rope, latent, k_rope, seq_lens, table, mask if mask is not None else seq_lens,
        part_out, part_lse, *q_lat.stride(), *q_rope.stride(), *latent.stride(), *k_rope.stride(),
        *table_strides, *mask_strides, part_out.stride(0), part_out.stride(1), part_out.stride(2),
        part_lse.stride(0), part_lse.stride(1), heads, tiles.num_splits,
        latent.shape[1] if paged else 1, scale * LOG2E,
        RANK=rank, ROPE=rope, RANK_PAD=tiles.rank_pad, ROPE_PAD=tiles.rope_pad,
        BLOCK_H=tiles.block_h, BLOCK_N=tiles.block_n, PAGED=paged, HAS_MASK=mask is not None,
        PRECISION="ieee" if q_lat.dtype == torch.float32 else "tf32",
        num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    _merge_kernel[(batch, heads)](
        part_out, part_lse, out, tiles.num_splits, part_out.stride(0), part_out.stride(1),
        part_out.stride(2), part_lse.stride(0), part_lse.stride(1), *out.stride(),
        RANK=rank, RANK_PAD=tiles.rank_pad, num_warps=4)
    return out
