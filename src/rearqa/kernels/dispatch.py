"""One dispatch per op: the Triton kernel on CUDA tensors, the torch reference elsewhere.

The backend is chosen per call from where the tensor arguments live, so the same model code runs
on the CPU (CI, the transformers engine here) and on the GPU machine. The Triton side is named by
a lazy "module:attr" path: Triton is imported only when a CUDA call needs it.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from rearqa.config_errors import ConfigError
from rearqa.kernels.config import BACKEND_ENV, BACKENDS
from rearqa.registry import load


def backend_setting() -> str:
    value = os.environ.get(BACKEND_ENV, "auto")
    if value not in BACKENDS:
        raise ConfigError(f"{BACKEND_ENV}={value!r}: choose one of {list(BACKENDS)}")
    return value


class KernelOp:
    """A callable op: `reference(*args)` or the Triton kernel at `triton`, by the arguments' device."""

    def __init__(self, name: str, reference: Callable[..., Any], triton: str | Callable | None = None) -> None:
        self.name = name
        self.reference = reference
        self.triton = triton  # "module:attr" (loaded on first CUDA call), a callable, or None

    def backend(self, *args: Any, **kwargs: Any) -> str:
        """"triton" or "reference": what a call with these arguments runs (keyword tensors count)."""
        setting = backend_setting()
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        on_cuda = [t.is_cuda for t in tensors]
        if setting == "reference":
            return "reference"
        if setting == "triton":
            if self.triton is None:
                raise ConfigError(f"{BACKEND_ENV}=triton, but op {self.name!r} has no Triton kernel")
            if not on_cuda or not all(on_cuda):
                raise ConfigError(f"{BACKEND_ENV}=triton: op {self.name!r} needs its tensors on a "
                                  "CUDA device")
            return "triton"
        return "triton" if self.triton is not None and on_cuda and all(on_cuda) else "reference"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.backend(*args, **kwargs) == "reference":
            return self.reference(*args, **kwargs)
        return load(self.triton)(*args, **kwargs)
