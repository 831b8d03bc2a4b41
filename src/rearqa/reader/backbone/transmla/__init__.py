"""TransMLA: grouped-query attention converted to multi-head latent attention (MLA).

Paper: Meng et al., "TransMLA: Multi-head Latent Attention Is All You Need" (NeurIPS 2025). A GQA
model caches a key and a value per KV head; MLA caches one low-rank latent per token plus a small
rotary key, and decodes in that latent space. The conversion is a chain of steps, each exact or
measured (convert.py):
  (a) the KV heads are replicated into per-query-head up-projections (exact);
  (b) RoRoPE: per rotary frequency, a PCA rotation of the key dimensions shared across KV heads
      moves the energy into the leading dimensions, which keep RoPE; the rest drop it (the
      rotation commutes with RoPE when one frequency is pooled per rotation; the drop is measured);
  (c) K/V norm balancing (exact), then (d) a joint PCA of [K_nope; V] truncated to kv_lora_rank,
      with the query folded to match (exact at the cap rank).

The converted reader is a transformers `DeepseekV3ForCausalLM` (dense MLP, untied lm_head, rope
rows interleaved as DeepSeek lays them out), so its weights are already in the layout vLLM loads:
  q_proj              (H * (head_dim + rope), hidden)   per head: [q_nope (head_dim); q_rope]
  kv_a_proj_with_mqa  (kv_lora_rank + rope, hidden)     [latent; shared rotary key]
  kv_a_layernorm      (kv_lora_rank,)                   only with latent_norm
  kv_b_proj           (H * (head_dim + v), kv_lora_rank) per head: [k_nope (head_dim); v]
  o_proj              (hidden, H * v)
modeling.py runs it with a compressed cache (latent + rotary key) and absorbed decode; export.py
writes the DeepSeek-V3 checkpoint vLLM serves.
"""
