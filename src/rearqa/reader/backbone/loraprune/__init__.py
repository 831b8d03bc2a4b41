"""LoRAPrune: structured pruning steered by the LoRA weights and their gradients.

Paper: Zhang et al., "LoRAPrune: Structured Pruning Meets Low-Rank Parameter-Efficient
Fine-Tuning" (efficiency-methods.md section 4). While a LoRA (W + s B A) is fine-tuned, the
gradient of the frozen W is never formed; it is estimated from the LoRA's own,
G ~ dB A + B dA - dB dA, and each weight's importance is |G * (W + s B A)|. Importances are summed
per structured group, normalised, and averaged over steps (EMA 0.9); a cubic schedule raises the
sparsity from 0 to the target, masking the least important groups at each pruning step.

Groups (groups.py) are GQA-aware: an attention group is one KV head with the G query heads that
read it (their q_proj rows and o_proj columns, its k_proj and v_proj rows); an MLP group is one
intermediate channel (gate_proj and up_proj rows, the down_proj column). A stock Llama checkpoint
has one head count and one intermediate size for every layer, so the mask (mask.py) prunes the
same number of groups in every layer, importance choosing which. prune.py slices a (LoRA-merged)
model to the mask: a plain LlamaForCausalLM with fewer heads and a narrower MLP that any engine
serves. The fine-tuning loop that chooses the mask is rearqa.training.loraprune.
"""
