"""Top-k selection: the op is torch.topk everywhere (until a GPU benchmark says otherwise); the
Triton sort kernel beside it matches torch.topk on rows without ties, over dtypes and sizes."""
from __future__ import annotations

import pytest
import torch

from rearqa.kernels import get_kernel
from rearqa.kernels.topk import topk, topk_reference


def distinct_scores(batch, length, dtype, device, seed=0, strided=False):
    """Rows of distinct values of `dtype` (consecutive bit patterns of positive normal floats,
    shuffled, random signs), so every top-k is unique; strided: every other column of a wider row."""
    gen = torch.Generator().manual_seed(seed)
    base, ints = {torch.float32: (0x3F800000, torch.int32), torch.float16: (0x0400, torch.int16),
                  torch.bfloat16: (0x0080, torch.int16)}[dtype]
    bits = torch.stack([torch.randperm(length, generator=gen) for _ in range(batch)]) + base
    rows = bits.to(ints).view(dtype) * (torch.randint(0, 2, (batch, length), generator=gen) * 2 - 1).to(dtype)
    if strided:
        wide = torch.zeros(batch, 2 * length, dtype=dtype)
        wide[:, ::2] = rows
        return wide.to(device)[:, ::2]
    return rows.to(device)


def test_the_op_is_torch_topk_on_every_device():
    assert get_kernel("topk") is topk and topk.triton is None
    x = torch.randn(3, 50)
    values, indices = topk(x, 7)
    expected = torch.topk(x, 7)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)
    with pytest.raises(ValueError, match="k=0: must be in 1..50"):
        topk_reference(x, 0)


def check(device, batch, length, k, dtype, largest=True, strided=False):
    from rearqa.kernels.topk.triton import topk_triton

    scores = distinct_scores(batch, length, dtype, device, strided=strided)
    values, indices = topk_triton(scores, k, largest=largest)
    want = topk_reference(scores, k, largest=largest)
    assert torch.equal(indices, want[1]) and torch.equal(values, want[0])


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_kernel_interpreted(interpreter_device, dtype):
    for batch, length, k, largest, strided in ((1, 1, 1, True, False), (3, 37, 10, False, True),
                                               (5, 300, 150, True, False), (2, 1024, 1000, False, True)):
        check(interpreter_device, batch, length, k, dtype, largest, strided)


@pytest.mark.interpret
def test_kernel_interpreted_breaks_ties_towards_the_lower_position(interpreter_device):
    from rearqa.kernels.topk.triton import topk_triton

    scores = torch.tensor([[1.0, 3.0, 3.0, -2.0, 3.0, 0.5, 0.5]])
    assert topk_triton(scores, 4)[1].tolist() == [[1, 2, 4, 0]]
    assert topk_triton(scores, 2, largest=False)[1].tolist() == [[3, 5]]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_kernel_on_gpu(gpu_device, batch, dtype):
    for length in (1, 77, 512, 4096, 16384):
        for share in (0.1, 0.5, 0.9):
            check(gpu_device, batch, length, max(1, int(share * length)), dtype, strided=length == 77)
