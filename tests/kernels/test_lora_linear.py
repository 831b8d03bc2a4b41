"""Fused LoRA linear: the Triton kernel against the torch reference (in float64) over dtypes,
the reader's adapter shapes and awkward ones, ranks, row counts and non-contiguous inputs."""
from __future__ import annotations

import pytest
import torch

from rearqa.kernels import get_kernel
from rearqa.kernels.lora_linear import lora_linear, lora_linear_reference
from rearqa.kernels.launch import SMEM_BYTES
from rearqa.kernels.lora_linear.tiling import LoraTiles, choose_tiles, staged_bytes


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


def run_kernel(args, scaling, **knobs):
    from rearqa.kernels.lora_linear.triton import lora_linear_triton

    return lora_linear_triton(*args, scaling=scaling, **knobs)


def test_reference_is_the_base_plus_the_low_rank_update():
    (x, w, a, b, bias), s = make_case(5, 12, 7, 3, torch.float64, "cpu")
    torch.testing.assert_close(lora_linear_reference(x, w, a, b, bias, scaling=s),
                               x @ (w + s * b @ a).T + bias)


def test_the_op_runs_the_reference_off_cuda():
    args, s = make_case(4, 16, 8, 2, torch.float32, "cpu", bias=False)
    assert get_kernel("lora_linear") is lora_linear and lora_linear.backend(*args[:4]) == "reference"
    torch.testing.assert_close(lora_linear(*args, scaling=s), lora_linear_reference(*args, scaling=s))


def test_tiles_by_row_count():
    assert choose_tiles(1, 16).block_m == 16 and choose_tiles(4096, 8).block_m == 64
    assert choose_tiles(32768, 16).block_m == 128
    assert choose_tiles(64, 5).rank_pad == 16 and choose_tiles(64, 64).rank_pad == 64
    tuned = choose_tiles(4096, 16, block_n=64, n_tiles=3, num_warps=4)
    assert (tuned.block_m, tuned.block_n, tuned.n_tiles, tuned.num_warps) == (64, 64, 3, 4)
    for bad, match in (({"block_n": 48}, "block_n=48"), ({"n_tiles": 0}, None), ({"n_tiles": 9}, "n_tiles=9"),
                       ({"num_warps": 3}, "num_warps=3"), ({"num_stages": 7}, "num_stages=7")):
        if match is None:  # 0 means "the default", as for every knob
            assert choose_tiles(64, 16, **bad).n_tiles == 1
            continue
        with pytest.raises(ValueError, match=match):
            choose_tiles(64, 16, **bad)


def test_a_default_too_deep_for_shared_memory_runs_with_fewer_stages_then_a_shorter_k_step():
    # fp32 at rank 64 and 64 rows: 64x16x128 four stages deep, compiled for sm_90, asks 237,568 B
    # (tests/kernels/test_compile_sm90.py reads that off the compiler) of the 232,448 a program has
    assert staged_bytes(LoraTiles(64, 16, 128, 64, 4, 4), 4) == 237568 > SMEM_BYTES
    fitted = choose_tiles(64, 64, itemsize=4)
    assert (fitted.block_k, fitted.num_stages) == (128, 3) and staged_bytes(fitted, 4) <= SMEM_BYTES
    assert choose_tiles(64, 64, itemsize=2).num_stages == 4  # 16-bit: the sweep's default as it was
    tight = choose_tiles(16, 128, itemsize=4, smem_bytes=60000)  # two stages are too many, so K halves
    assert (tight.num_stages, tight.block_k) == (2, 64) and staged_bytes(tight, 4) <= 60000
    assert choose_tiles(64, 64, itemsize=4, num_stages=4).num_stages == 4  # a knob given is kept


def test_sixteen_bit_tiles_are_fitted_as_the_launch_compiles_them():
    # a launch's 16-bit tiles keep num_stages K steps in flight (session 24: a GEMM-core tile of
    # 128 x 256 x 128 three stages deep asked 294,912 B on the GPU); fp32 tiles keep one fewer
    core = LoraTiles(128, 256, 128, 16, 8, 3)
    assert staged_bytes(core, 2, lora=False) == 294912 > SMEM_BYTES
    assert staged_bytes(core, 4, lora=False) == 2 * (128 + 256) * 128 * 4
    fitted = choose_tiles(1, 16, lora=False, block_m=128, block_n=256, num_warps=8)
    assert (fitted.block_k, fitted.num_stages) == (128, 2) and staged_bytes(fitted, 2, lora=False) <= SMEM_BYTES
    # the fused kernel's reader defaults (rank 16) are what the sweeps chose; rank 128 at 64 rows loses a stage
    assert [choose_tiles(m, 16).num_stages for m in (1, 64, 4096, 32768)] == [4, 4, 3, 3]
    assert choose_tiles(64, 128).num_stages == 3 and staged_bytes(choose_tiles(64, 128), 2) <= SMEM_BYTES


def test_the_reference_ignores_the_tile_knobs():
    args, s = make_case(4, 16, 8, 2, torch.float32, "cpu", bias=False)
    torch.testing.assert_close(lora_linear(*args, scaling=s, block_n=32, n_tiles=2),
                               lora_linear_reference(*args, scaling=s))


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
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_loading_b_early_changes_the_timing_not_the_result(interpreter_device, dtype):
    """early_b moves B's and the bias's loads before the K loop: the same sums in the same order,
    so the same bits, with and without a bias, over several column tiles a program."""
    for rows, (k, n), rank, bias, knobs in ((1, (40, 24), 8, True, {}), (70, (96, 200), 16, False, {}),
                                            (33, (64, 48), 5, True, {"block_n": 16, "n_tiles": 3})):
        args, s = make_case(rows, k, n, rank, dtype, interpreter_device, bias=bias)
        assert torch.equal(run_kernel(args, s, early_b=True, **knobs), run_kernel(args, s, **knobs))


@pytest.mark.interpret
@pytest.mark.parametrize("knobs", [{"block_n": 16, "n_tiles": 3}, {"block_m": 16, "block_n": 32, "n_tiles": 2, "block_k": 16}],
                         ids=["16x3", "32x2"])
def test_kernel_interpreted_shares_x_a_over_column_tiles(interpreter_device, close_to, knobs):
    # 37 and 200 columns are not multiples of n_tiles x block_n: the last group's tiles are partly
    # or wholly outside N (masked); r = 5 pads to 16
    for rows, k, n, rank in ((17, 40, 37, 5), (130, 24, 200, 16)):
        args, s = make_case(rows, k, n, rank, torch.float32, interpreter_device, strided=True)
        close_to(run_kernel(args, s, **knobs), ground_truth(args, s), torch.float32)


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
    for rows, bias, strided in ((1, False, False), (16, True, True), (64, False, True), (65, True, False),
                                (4096, False, True), (32768, True, False)):
        check(gpu_device, close_to, rows, *shape, rank, dtype, bias=bias, strided=strided)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_loading_b_early_on_gpu(gpu_device, close_to, dtype):
    for rows, (k, n), rank in ((1, (576, 576), 16), (64, (1536, 576), 64), (4096, (576, 1536), 16), (333, (100, 37), 5)):
        args, s = make_case(rows, k, n, rank, dtype, gpu_device, strided=True)
        close_to(run_kernel(args, s, early_b=True), ground_truth(args, s), dtype)


# the tile sweep's combinations (scripts/kernel_bench.py LORA_SWEEP): every one must be exact
@pytest.mark.gpu
@pytest.mark.parametrize("knobs", [{"block_m": 64, "block_n": 64, "n_tiles": 3, "num_warps": 4, "num_stages": 4},
                                   {"block_m": 128, "block_n": 64, "block_k": 32, "n_tiles": 2},
                                   {"block_m": 16, "block_n": 16, "block_k": 128, "num_warps": 2}],
                         ids=["64x64x3", "128x64x2", "16x16"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_kernel_on_gpu_with_tile_knobs(gpu_device, close_to, knobs, dtype):
    for rows, (k, n), rank in ((1, (576, 576), 16), (65, (1536, 576), 5), (4096, (576, 1536), 16),
                               (333, (100, 37), 64)):
        args, s = make_case(rows, k, n, rank, dtype, gpu_device, strided=True)
        close_to(run_kernel(args, s, **knobs), ground_truth(args, s), dtype)


@pytest.mark.parametrize("rows,k,n", [(5, 40, 24), (70, 576, 192)])
def test_the_benchmarks_gemm_core_is_the_base_product(interpreter_device, close_to, rows, k, n):
    """lora_linear/gemm.py (kernel_bench --parts gemm's Triton GEMM alone): x W^T, odd sizes masked."""
    from rearqa.kernels.lora_linear.gemm import gemm_triton

    (x, w, _, _, _), _ = make_case(rows, k, n, 4, torch.bfloat16, interpreter_device, bias=False)
    close_to(gemm_triton(x, w), x.double() @ w.double().T, torch.bfloat16)


def test_the_benchmarks_gemm_core_on_the_gpu(gpu_device, close_to):
    from rearqa.kernels.lora_linear.gemm import gemm_triton

    for rows in (1, 64, 4096):
        (x, w, _, _, _), _ = make_case(rows, 576, 1536, 16, torch.bfloat16, gpu_device, bias=False)
        close_to(gemm_triton(x, w), x.double() @ w.double().T, torch.bfloat16)
        close_to(gemm_triton(x, w, block_m=128, block_n=256, num_warps=8), x.double() @ w.double().T,
                 torch.bfloat16)


def run_persistent(args, scaling, lora=True, **knobs):
    from rearqa.kernels.lora_linear.persistent import lora_linear_persistent

    x, w, a, b, bias = args
    return lora_linear_persistent(x, w, a if lora else None, b if lora else None, bias, scaling=scaling, **knobs)


SMALL_PERSISTENT = dict(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=2, programs=3)


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_benchmarks_persistent_tma_form_interpreted(interpreter_device, close_to, dtype):
    """lora_linear/persistent.py (kernel_bench --parts gemm): fused and core alone, 3 programs
    walking more tiles than they are (rows and columns not multiples of the tiles; r = 8 padded to
    16 by the descriptor); r = 5 refused (B's rows are not 16-byte aligned for TMA)."""
    for rows, k, n, rank, bias in ((40, 64, 48, 16, True), (130, 96, 80, 8, False), (7, 32, 16, 5, True)):
        args, s = make_case(rows, k, n, rank, dtype, interpreter_device, bias=bias)
        if rank == 5:  # B's rows are 10 or 20 bytes: not 16-byte aligned
            with pytest.raises(ValueError, match="TMA needs"):
                run_persistent(args, s, **SMALL_PERSISTENT)
            continue
        close_to(run_persistent(args, s, **SMALL_PERSISTENT), ground_truth(args, s), dtype)
        x, w, _, _, b = args
        want = lora_linear_reference(*[t.double() if t is not None else None for t in (x, w)],
                                     torch.zeros(1, k, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.float64),
                                     b.double() if b is not None else None, scaling=s)
        close_to(run_persistent(args, s, lora=False, **SMALL_PERSISTENT), want, dtype)


def test_the_persistent_tma_form_refuses_what_tma_cannot_read(interpreter_device):
    args, s = make_case(8, 40, 24, 16, torch.float32, interpreter_device, strided=True)
    with pytest.raises(ValueError, match="last stride 1"):  # every other column of x
        run_persistent(args, s, **SMALL_PERSISTENT)
    (x, w, a, b, bias), _ = make_case(8, 40, 24, 16, torch.float32, interpreter_device)
    with pytest.raises(ValueError, match="both lora_a and lora_b"):
        run_persistent((x, w, a, None, bias), s, **SMALL_PERSISTENT)


@pytest.mark.gpu
@pytest.mark.parametrize("knobs", [{}, {"block_n": 256, "num_warps": 8, "num_stages": 3}],
                         ids=["default", "128x256"])  # four stages of 128 x 256 do not fit (test_compile_sm90.py)
def test_the_persistent_tma_form_on_gpu(gpu_device, close_to, knobs):
    for rows, (k, n), rank in ((4096, (576, 1536), 16), (32768, (1536, 576), 16), (333, (576, 192), 8)):
        args, s = make_case(rows, k, n, rank, torch.bfloat16, gpu_device)
        close_to(run_persistent(args, s, **knobs), ground_truth(args, s), torch.bfloat16)
        x, w, _, _, b = args
        close_to(run_persistent(args, s, lora=False, **knobs),
                 (x.double() @ w.double().T) + b.double(), torch.bfloat16)


def run_split(args, scaling, **knobs):
    from rearqa.kernels.lora_linear.split import lora_linear_split

    return lora_linear_split(*args, scaling=scaling, **knobs)


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_benchmarks_split_decode_form_interpreted(interpreter_device, close_to, dtype):
    """lora_linear/split.py (kernel_bench --parts gemm, decode rows): x A^T by a program of its own,
    the column tiles waiting on its flag; equal bit for bit to triton.py's kernel at the same K
    step, and the flag and counter back at zero after every call (rows and columns not multiples
    of the tiles, r = 5 padded, non-contiguous x, with and without a bias)."""
    from rearqa.kernels.lora_linear.split import _SYNC

    for rows, k, n, rank, bias, strided in ((1, 64, 48, 16, True, False), (7, 40, 24, 5, False, True),
                                            (33, 96, 80, 8, True, False)):
        args, s = make_case(rows, k, n, rank, dtype, interpreter_device, bias=bias, strided=strided)
        got = run_split(args, s, block_n=16, block_k=16)
        close_to(got, ground_truth(args, s), dtype)
        fused = run_kernel(args, s, block_m=max(16, 1 << (rows - 1).bit_length()), block_n=16, block_k=16)
        assert torch.equal(got, fused)
        assert _SYNC[torch.device(interpreter_device)].tolist() == [0, 0]  # ready for the next call
        assert torch.equal(run_split(args, s, block_n=16, block_k=16), got)  # and it runs again alike


def test_the_split_form_refuses_what_it_is_not_for(interpreter_device):
    args, s = make_case(65, 32, 16, 4, torch.float32, interpreter_device)
    with pytest.raises(ValueError, match="1 to 64 rows"):
        run_split(args, s)
    (x, w, a, b, bias), _ = make_case(4, 32, 16, 4, torch.float32, interpreter_device)
    with pytest.raises(ValueError, match="expected"):
        run_split((x, w, a, b[:, :2], bias), s)


@pytest.mark.gpu
def test_the_split_decode_form_on_gpu(gpu_device, close_to):
    for rows, (k, n), rank in ((1, (576, 576), 16), (16, (576, 1536), 16), (64, (1536, 576), 16), (5, (576, 192), 8)):
        for dtype in (torch.bfloat16, torch.float16):
            args, s = make_case(rows, k, n, rank, dtype, gpu_device)
            got = run_split(args, s)
            close_to(got, ground_truth(args, s), dtype)
            for _ in range(20):  # the flag resets: repeated calls agree
                assert torch.equal(run_split(args, s), got)
