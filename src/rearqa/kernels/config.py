"""The kernel wing's names, torch-free: the op registry and the backends a dispatch can pick."""
from __future__ import annotations

# op -> "module:attr" of its KernelOp (docs/kernels.md).
KERNELS: dict[str, str] = {
    "mla_decode": "rearqa.kernels.mla_decode:mla_decode",  # MLA absorbed decode, split-KV
    "lora_linear": "rearqa.kernels.lora_linear:lora_linear",  # base GEMM + low-rank path, fused
    "topk": "rearqa.kernels.topk:topk",  # SpAtten's token selection (torch.topk until benchmarked)
}
# REARQA_KERNELS=auto (Triton on CUDA, the reference elsewhere) | reference (always) | triton
# (always: an error on tensors that are not on CUDA).
BACKENDS = ("auto", "reference", "triton")
BACKEND_ENV = "REARQA_KERNELS"
