"""KV-head merging: a GQA reader with fewer KV heads, fitted to its own KV cache.

Paper: Yu et al., "Effectively Compress KV Heads for LLM", arXiv 2406.07056 (efficiency-methods.md
section 4). The KV heads are split into groups of neighbouring heads and each group is merged into
one head by a PCA of the keys and values the model caches on calibration text (not of the
weights); the PCA bases are folded into the key/value projections and, transposed, into the query
and output projections. The result is a stock Llama checkpoint with fewer `num_key_value_heads`
(SmolLM2-135M: 3 -> 1, a 3x smaller cache), which any engine serves, vLLM included.

Values: the group's value vectors [v_1; ...; v_s] (s * head_dim) are projected on their top
head_dim principal directions U; the merged value is U^T [v], and each query head folds its KV
head's block of U into its o_proj columns. Exact when the kept directions span the values.

Keys with RoPE (the approximation): a map that mixes KV heads commutes with RoPE only if it acts
on each rotary frequency's pair as a complex scalar (a rotation and scale). So the key PCA is done
per frequency: the s heads' pairs at frequency i are a vector in C^s; its Hermitian second moment
gives the top complex direction u_i; the merged key's pair i is u_i^H z_i and each query head
multiplies its pair i by conj(u_i[its head]), which commutes with RoPE. Keeping one complex
component of s per frequency is all that is dropped; with s = 1 (3 -> 3 heads) it is exact.
No fine-tuning follows here (the paper heals with LoRA afterwards).
"""
