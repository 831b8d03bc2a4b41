"""MLA absorbed decode attention: one query token per sequence against a latent cache.

The idea (DeepSeek-V2's MLA, absorbed form): the cache holds per token only the latent c
(kv_lora_rank wide) and the shared rotary key; folding W_UK into the query makes every head attend
straight off the latent, and the latent is also the value, so decode reads kv_lora_rank + rope
values per token once for all heads. Decode is then a bandwidth problem: read the cache once, at
copy speed. The kernel follows FlashDecoding (Dao, Haziza, Massa, Sizov, 2023: split the keys
into chunks that run in parallel, each writing a partial output and its log-sum-exp, then merge
by LSE) and FlashMLA (DeepSeek, 2025: all heads of a sequence in one program over a paged latent
cache, fp32 partials combined by a second kernel), as vLLM/SGLang's Triton MLA decode also do.

    mla_decode(q_lat (B, H, r), q_rope (B, H, p), latent, k_rope, seq_lens (B,),
               block_table=None, kv_mask=None, *, scale, num_splits=None, block_n=None,
               num_warps=None, num_stages=None)
        -> (B, H, r) in q_lat's dtype

Contiguous cache: latent (B, S, r), k_rope (B, S, p). Paged cache: latent (num_blocks, page, r),
k_rope (num_blocks, page, p), block_table (B, max_blocks) int. Lengths may differ per sequence;
kv_mask (B, >= max length) bool masks keys inside a length (left padding in a transformers batch). Triton on
CUDA tensors, the torch reference elsewhere (kernels/dispatch.py); tiling in tiling.py.
"""
from rearqa.kernels.dispatch import KernelOp
from rearqa.kernels.mla_decode.reference import mla_decode_reference

mla_decode = KernelOp("mla_decode", reference=mla_decode_reference,
                      triton="rearqa.kernels.mla_decode.triton:mla_decode_triton")

__all__ = ["mla_decode", "mla_decode_reference"]
