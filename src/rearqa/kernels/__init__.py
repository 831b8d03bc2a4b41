"""GPU kernels: each op a pure-torch reference beside its Triton kernel, behind one dispatch.

An op lives in `kernels/<op>/` (reference.py: the maths in plain torch, the ground truth the tests
compare with; triton.py: the kernel) and is one `KernelOp` (dispatch.py) registered in `KERNELS`
(config.py): on CUDA tensors it runs Triton, elsewhere (and whenever REARQA_KERNELS=reference) the
reference. This package imports only torch, triton and the shared leaves, so any wing may use it.

Ops (docs/kernels.md): `mla_decode` (MLA absorbed decode, split-KV), `lora_linear` (fused LoRA
forward) and `topk` (SpAtten's token selection; torch.topk until a GPU benchmark says otherwise).
docs/architecture.md says how to add one.
"""
from rearqa.kernels.config import BACKENDS, KERNELS

__all__ = ["BACKENDS", "KERNELS", "get_kernel"]


def get_kernel(name: str):
    """The `KernelOp` registered as `name`; an unknown name lists the valid ones."""
    from rearqa.registry import resolve

    return resolve(KERNELS, name, "kernel op")
