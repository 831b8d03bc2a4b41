"""Where the kernel tests run: `kernel_device` gives each Triton test its device or skips it.

  GPU machine   CUDA and triton present: the kernels on "cuda" over the full grids (marker gpu).
  interpreter   TRITON_INTERPRET=1 and triton importable: the same kernels executed by Triton's
                CPU interpreter on CPU tensors, small grids only (marker interpret).
  CI / main venv  neither: those tests skip with the reason; the reference tests still run.
The interpreter of Triton 3.9 multiplies bf16 tl.dot operands as their raw uint16 bits (it keeps
bf16 as uint16 and hands them to numpy.matmul); `kernel_device` patches that one builder method
to widen bf16 to fp32 first, which is what the tensor cores do. The kernels are not changed.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
ON_GPU = HAS_TRITON and torch.cuda.is_available() and not INTERPRET


def _patch_interpreter_bf16_dot(monkeypatch) -> None:
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot

    def widen(handle):
        if handle.dtype == tl.bfloat16:  # stored as uint16: shift into the top half of a float32
            data = (handle.data.astype(np.uint32) << 16).view(np.float32)
            return interpreter.TensorHandle(data, tl.float32)
        return handle

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


@pytest.fixture
def gpu_device():
    """"cuda" on the GPU machine; a skip elsewhere (the full grids)."""
    if not ON_GPU:
        pytest.skip("needs a CUDA GPU and triton (the GPU machine; CI has neither)")
    yield "cuda"
    # xdist's workers share the card: one keeps none of a test's memory cached for the next
    # (session 27: 16 workers on an 80 GiB H100 ran 12 tests out of memory)
    torch.cuda.empty_cache()


@pytest.fixture
def interpreter_device(monkeypatch):
    """"cpu" under TRITON_INTERPRET=1 with triton installed; a skip elsewhere (small grids)."""
    if not (HAS_TRITON and INTERPRET):
        pytest.skip("set TRITON_INTERPRET=1 with triton installed to run kernels on the CPU")
    _patch_interpreter_bf16_dot(monkeypatch)
    return "cpu"


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")  # NaN never passes
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


@pytest.fixture
def close_to():
    """close_to(got, want_fp64, dtype): assert ||got - want|| / ||want|| under the dtype's bound
    (METHOD.md: bf16 operands land between 1e-3 and 1e-2, fp32 arithmetic far under 1e-3)."""
    bound = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}

    def check(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> float:
        error = _rel_error(got, want)
        assert error < bound[dtype], f"relative error {error:.2e} over {bound[dtype]:.0e} ({dtype})"
        return error
    return check
