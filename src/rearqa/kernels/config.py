"""The kernel wing's names, torch-free: the op registry and the backends a dispatch can pick."""
from __future__ import annotations

# op -> "module:attr" of its KernelOp, e.g. "mla_decode": "rearqa.kernels.mla_decode:mla_decode".
KERNELS: dict[str, str] = {}
# REARQA_KERNELS=auto (Triton on CUDA, the reference elsewhere) | reference (always) | triton
# (always: an error on tensors that are not on CUDA).
BACKENDS = ("auto", "reference", "triton")
BACKEND_ENV = "REARQA_KERNELS"
