"""The kernel wing's dispatch: the reference off CUDA, the kernel on it, the override honoured."""
from __future__ import annotations

import pytest
import torch

from rearqa.config_errors import ConfigError
from rearqa.kernels import get_kernel
from rearqa.kernels.config import BACKEND_ENV
from rearqa.kernels.dispatch import KernelOp

double = KernelOp("double", reference=lambda x: 2 * x, triton="no_such_module:double")


def test_cpu_tensors_run_the_reference(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    x = torch.arange(4.0)
    assert double.backend(x) == "reference"
    assert torch.equal(double(x), 2 * x)  # the Triton path (an unimportable module) is never loaded


def test_forcing_triton_off_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "triton")
    with pytest.raises(ConfigError, match="needs its tensors on a CUDA device"):
        double(torch.ones(2))
    with pytest.raises(ConfigError, match="has no Triton kernel"):
        KernelOp("ref-only", reference=lambda x: x)(torch.ones(2))
    monkeypatch.setenv(BACKEND_ENV, "fast")
    with pytest.raises(ConfigError, match=r"choose one of \['auto', 'reference', 'triton'\]"):
        double(torch.ones(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none in CI)")
def test_cuda_tensors_pick_the_kernel(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    x = torch.ones(2, device="cuda")
    assert double.backend(x) == "triton"
    monkeypatch.setenv(BACKEND_ENV, "reference")
    assert torch.equal(double(x), 2 * x)


def test_unknown_op_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown kernel op 'no_such_op'; valid ops are"):
        get_kernel("no_such_op")


def test_keyword_tensors_count_for_the_device(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "triton")
    with pytest.raises(ConfigError, match="needs its tensors on a CUDA device"):
        double.backend(x=torch.ones(2))
