"""Fused LoRA linear: the Triton kernel against the torch reference (in float64) over dtypes,
the reader's adapter shapes and awkward ones, ranks, row counts and non-contiguous inputs."""
from __future__ import annotations

import pytest
import torch

from rearqa.kernels import get_kernel
from rearqa.kernels.lora_linear import lora_linear, lora_linear_reference
from rearqa.kernels.lora_linear.tiling import choose_tiles


def make_case(rows, k, n, rank, dtype, device, bias=True, strided=False, seed=0):
    """x (rows, K) (strided: every other column of a (rows, 2K) tensor), weight, A, B, bias, s."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0):
        return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dtype)

    x = rand(rows, 2 * k)[:, ::2] if strided else rand(rows, k)
    args = (x, rand(n, k, std=k ** -0.5), rand(rank, k, std=k ** -0.5), rand(n, rank, std=0.5),
            rand(n) if bias else None)
    return args, 2.0  # scaling = alpha / r with alpha = 2 r


def ground_truth(args, scaling):
    return lora_linear_reference(*[t.double() if t is not None else None for t in args], scaling=scaling)


def run_kernel(args, scaling):
    from rearqa.kernels.lora_linear.triton import lora_linear_triton

    return lora_linear_triton(*args, scaling=scaling)


def test_reference_is_the_base_plus_the_low_rank_update():
    (x, w, a, b, bias), s = make_case(5, 12, 7, 3, torch.float64, "cpu")
    torch.testing.assert_close(lora_linear_reference(x, w, a, b, bias, scaling=s),
                               x @ (w + s * b @ a).T + bias)


def test_the_op_runs_the_reference_off_cuda():
    args, s = make_case(4, 16, 8, 2, torch.float32, "cpu", bias=False)
    assert get_kernel("lora_linear") is lora_linear and lora_linear.backend(*args[:4]) == "reference"
    torch.testing.assert_close(lora_linear(*args, scaling=s), lora_linear_reference(*args, scaling=s))


def test_tiles_by_row_count():
    assert choose_tiles(1, 16).block_m == 16 and choose_tiles(4096, 8).block_m == 128
    assert choose_tiles(64, 5).rank_pad == 16 and choose_tiles(64, 64).rank_pad == 64


def check(device, close_to, rows, k, n, rank, dtype, **kw):
    args, s = make_case(rows, k, n, rank, dtype, device, **kw)
    close_to(run_kernel(args, s), ground_truth(args, s), dtype)


DTYPES = [torch.bfloat16, torch.float16, torch.float32]


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(40, 24, 8), (96, 200, 16), (130, 64, 5)], ids=["40-24-r8", "96-200-r16", "130-64-r5"])
def test_kernel_interpreted(interpreter_device, close_to, shape, dtype):
    for rows, bias, strided in ((1, True, False), (17, False, True), (130, True, True)):
        check(interpreter_device, close_to, rows, *shape, dtype, bias=bias, strided=strided)


@pytest.mark.interpret
def test_kernel_interpreted_keeps_leading_dims(interpreter_device):
    args, s = make_case(6, 32, 16, 4, torch.float32, interpreter_device)
    x3 = args[0].view(2, 3, 32)
    got = run_kernel((x3, *args[1:]), s)
    assert got.shape == (2, 3, 16)
    torch.testing.assert_close(got, lora_linear_reference(x3, *args[1:], scaling=s), rtol=1e-5, atol=1e-5)


ADAPTER_SHAPES = {"576-576": (576, 576), "576-192": (576, 192), "576-1536": (576, 1536),
                  "1536-576": (1536, 576), "odd-100-37": (100, 37)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rank", [8, 16, 64, 5])
@pytest.mark.parametrize("shape", list(ADAPTER_SHAPES.values()), ids=list(ADAPTER_SHAPES))
def test_kernel_on_gpu(gpu_device, close_to, shape, rank, dtype):
    for rows, bias, strided in ((1, False, False), (16, True, True), (65, True, False),
                                (4096, False, True), (32768, True, False)):
        check(gpu_device, close_to, rows, *shape, rank, dtype, bias=bias, strided=strided)
