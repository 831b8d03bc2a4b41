"""X-EcoMLA: pretrained grouped-query attention upcycled to multi-head latent attention (MLA).

Paper: Li et al. (AMD), "X-EcoMLA: Upcycling Pre-Trained Attention into MLA for Efficient and
Extreme KV Compression", arXiv 2503.11132. Where TransMLA fits its MLA to calibration statistics,
X-EcoMLA initialises it from the weights alone: an SVD of the stacked key and value projections
(KV heads repeated to the query heads) gives the latent down- and up-projections, the rotary key
is the mean of the heads' rotary key rows, and each layer's rank keeps a share of the singular
values' energy. The init does not keep the model's function; the paper recovers it by
distillation from a larger teacher. convert.py is the surgery; the converted reader runs on
TransMLA's MLA modules (transmla/modeling.py) and exports like a TransMLA reader.
"""
