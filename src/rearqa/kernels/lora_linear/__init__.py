"""Fused LoRA linear: y = x W^T + b + s (x A^T) B^T in one kernel, B A never formed.

LoRA (Hu et al., 2021) adds a rank-r update B A to a frozen weight. Served unmerged (several
adapters over one base, or an adapter being trained), the plain way costs three launches and an
extra pass over x: the base GEMM, x A^T, then (x A^T) B^T added to the output. The kernel folds
the low-rank path into the base GEMM's K loop (triton.py). Adapter shapes of our SmolLM2 reader:
576->576 (q, o), 576->192 (k, v), 576->1536 (gate, up), 1536->576 (down), r in {8, 16, 64}.

    lora_linear(x (..., K), weight (N, K), lora_a (r, K), lora_b (N, r), bias=None, *, scaling)
        -> (..., N)

Forward only: the training loop runs PEFT's LoRA layers and their torch backward. The reader calls
it for an adapter kept unmerged on engine hf (reader.hf_adapter 'unmerged':
reader/adapters/unmerged.py, whose FusedLoraLinear runs each adapted linear layer through it).
Triton on CUDA tensors, the torch reference elsewhere. For the benchmark only
(scripts/kernel_bench.py): gemm.py holds the kernel's GEMM core alone (--parts gemm), persistent.py
a persistent TMA-fed form (--parts gemm), split.py a decode form with x A^T computed once by a
program of its own (--parts split).
"""
from rearqa.kernels.dispatch import KernelOp
from rearqa.kernels.lora_linear.reference import lora_linear_reference

lora_linear = KernelOp("lora_linear", reference=lora_linear_reference,
                       triton="rearqa.kernels.lora_linear.triton:lora_linear_triton")

__all__ = ["lora_linear", "lora_linear_reference"]
