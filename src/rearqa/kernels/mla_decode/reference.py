"""MLA absorbed decode in plain torch: the ground truth of the kernel and the "naive" baseline.

One query token per sequence attends over a latent cache (DeepSeek-V2 MLA, absorbed form):
    logits[h, j] = scale * (q_lat[h] . latent[j] + q_rope[h] . k_rope[j])
    out[h]       = sum_j softmax(logits[h])[j] * latent[j]          (the latent doubles as V)
The steps and their dtypes are those of `MLAAttention._absorbed` at one query token (products in
the input dtype, softmax in fp32, probabilities cast back before the second product), so the model
can call the op and keep its numbers on the CPU bit for bit. Upcast the inputs to float64 for a
ground truth in higher precision.
"""
from __future__ import annotations

import torch


def gather_pages(cache: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """A paged cache (num_blocks, page, W) read through `block_table` (B, max_blocks) as a
    contiguous one (B, max_blocks * page, W)."""
    pages = cache[block_table.long()]  # (B, max_blocks, page, W)
    return pages.flatten(1, 2)


def allowed_keys(seq_lens: torch.Tensor, keys: int, kv_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, keys) bool: position j < seq_lens[b], and kv_mask[b, j] where a mask is given."""
    positions = torch.arange(keys, device=seq_lens.device)
    allowed = positions[None, :] < seq_lens[:, None].to(positions.device)
    if kv_mask is not None:  # as wide as the longest sequence at least; a paged cache may be wider
        mask = kv_mask[:, :keys].to(device=allowed.device, dtype=torch.bool)
        allowed[:, :mask.shape[1]] &= mask
        allowed[:, mask.shape[1]:] = False
    return allowed


def mla_decode_reference(q_lat: torch.Tensor, q_rope: torch.Tensor, latent: torch.Tensor,
                         k_rope: torch.Tensor, seq_lens: torch.Tensor,
                         block_table: torch.Tensor | None = None,
                         kv_mask: torch.Tensor | None = None, *, scale: float,
                         num_splits: int | None = None, block_n: int | None = None,
                         num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """(B, H, r) attention output in the latent space, q_lat's dtype.

    q_lat (B, H, r), q_rope (B, H, p); contiguous cache: latent (B, S, r), k_rope (B, S, p);
    paged cache: latent (num_blocks, page, r), k_rope (num_blocks, page, p) and block_table
    (B, max_blocks). seq_lens (B,): keys 0 .. seq_lens[b]-1 are attended; kv_mask (B, W) bool,
    optional, W >= max(seq_lens): False masks a key (left padding). A row with every key masked
    attends uniformly over all positions (the lowest finite logit, as MLAAttention), where the kernel writes zeros.
    `num_splits` and `block_n` are the kernel's tiling knobs, accepted and ignored here."""
    if block_table is not None:
        latent, k_rope = gather_pages(latent, block_table), gather_pages(k_rope, block_table)
    scores = q_lat @ latent.transpose(-1, -2) + q_rope @ k_rope.transpose(-1, -2)  # (B, H, S)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * scale  # fp32 (fp64 kept)
    allowed = allowed_keys(seq_lens, scores.shape[-1], kv_mask)  # (B, S)
    scores = scores.masked_fill(~allowed[:, None, :], torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1).to(latent.dtype)  # (B, H, S)
    return (probs @ latent).to(q_lat.dtype)  # (B, H, r)
