"""TPLA: tensor-parallel latent attention for the MLA reader's decode.

Paper: Tang et al., "TPLA: Tensor Parallel Latent Attention for Efficient Disaggregated
Prefill & Decode Inference" (arXiv 2508.15881; no code released). MLA caches one latent per
token, so head-parallel tensor parallelism would copy the whole latent cache onto every device.
TPLA instead splits the latent c (kv_lora_rank wide) and the matching slice of every head's
absorbed query into g shards: each shard attends with its own softmax over its latent slice (plus
the shared rotary logits) and applies its columns of W_UV; one all-reduce sums the o_proj outputs.
That approximates full MLA (separate softmaxes), so an orthogonal rotation of the latent space
(Hadamard or PCA, rotation.py) is folded into the weights first to spread the energy across the
shards. Prefill stays full MLA; only decode is sharded.

  rotation.py  hadamard, pca_rotation, fold_rotation (exact on the unsharded model)
  sharded.py   TPLAAttention: the g-shard decode simulated in one process, or one rank's shard
  decode.py    token-by-token decode loops (teacher-forced, greedy) shared by both runs
  dist.py      the real g-process run over torch.distributed (gloo, CPU)
"""
