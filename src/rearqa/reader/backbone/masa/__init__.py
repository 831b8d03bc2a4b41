"""MASA as a backbone transform: the pretrained projections re-expressed by shared matrix atoms.

Paper: Zhussip et al., "Share Your Attention: Transformer Weight Sharing via Matrix-based
Dictionary Learning", arXiv 2508.04581 (reference code mts-ai/MASA, not reachable here). Every
layer's projection of one type p (q, k, v, o; MLP projections on request) is written as
W^p_l = sum_s c_{l,s} D^p_s over S atoms D^p_s shared by all L layers. The paper trains atoms and
coefficients from scratch (S = L / 3: 66.7% fewer attention parameters) and, for a pretrained
model, starts from a "Matrix PCA" of the stacked weights (refined with data and grouped layers,
not built here). This transform is that training-free start: per projection type, the L weights
flattened into the rows of X (L, d_out d_in), X = U Sigma V^T, the atoms the top S rows of
Sigma V^T and the coefficients U[:, :S] (convert.py). S = L rebuilds every weight exactly.

It is a storage saving, not a speed-up: the reader is served rebuilt (a stock checkpoint of the
source's own architecture and shapes, which any engine loads), and the compact form, atoms plus
coefficients, is saved beside it (masa_dictionary.safetensors) with the parameters it saves
counted (masa_report.json).
"""
