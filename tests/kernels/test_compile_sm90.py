"""The fused LoRA kernel's default tiles (lora_linear/triton.py) and its persistent TMA form
(lora_linear/persistent.py) compile for the H100/H200 (sm_90) without a device: Triton's compiler
and the ptxas it ships, no GPU. Catches a kernel that cannot be built before device time is spent
on it; how much shared memory a tile needs is read off the compiled kernel (a program may have
227 KiB on sm_90). Session 21's GPU run found fp32 at rank 64 and 64 rows over that, which this
file did not yet compile. Session 24's found a 16-bit GEMM-core tile over it that compiled here
within it: the kernels were compiled without the specialization a launch gives them
(`as_launched`), and the compiler then pipelines 16-bit tiles less."""
from __future__ import annotations

import importlib.util
import os

import pytest

from rearqa.kernels.launch import SMEM_BYTES as SMEM_LIMIT  # bytes a program may use on sm_90

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                       reason="needs triton (the compiler; the CPU venv removes it)"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="TRITON_INTERPRET=1 makes @triton.jit functions interpreted: nothing to compile"),
]


UNIT_STRIDES = ("s_xk", "s_wk", "s_ak", "s_br", "s_yn")  # the last dimension's stride of x, W, A, B, y


def as_launched(fn, signature: dict, constexprs: dict):
    """The kernel's source as Triton's JIT specializes it for a launch on contiguous tensors whose
    sizes are multiples of 16: each unit stride becomes the constant 1, and each pointer, other
    stride, N and K is marked divisible by 16. So the compiled kernel asks the shared memory the GPU
    then asks (16-bit tiles get the deeper pipeline only with this)."""
    from triton.compiler import ASTSource

    signature, constexprs = dict(signature), dict(constexprs)
    for name in UNIT_STRIDES:
        if name in signature:
            signature[name], constexprs[name] = "constexpr", 1
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if name in signature and signature[name] != "constexpr"
             and (signature[name].startswith("*") or name.startswith("s_") or name in ("N", "K"))}
    return ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)


def compile_sm90(source, num_warps: int, num_stages: int):
    import triton
    from triton.backends.compiler import GPUTarget

    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages))


def compiled(block_n: int, num_warps: int, num_stages: int, lora: bool, warp_specialize: bool = False):
    from rearqa.kernels.lora_linear.persistent import _persistent_kernel

    bm, bk, r = 128, 64, 16
    signature = {"x_desc": f"tensordesc<bf16[{bm}, {bk}]>", "w_desc": f"tensordesc<bf16[{block_n}, {bk}]>",
                 "a_desc": f"tensordesc<bf16[{r}, {bk}]>", "b_desc": f"tensordesc<bf16[{block_n}, {r}]>",
                 "y_desc": f"tensordesc<bf16[{bm}, {block_n}]>", "bias": "*bf16", "M": "i32", "N": "i32",
                 "K": "i32", "scaling": "fp32"}
    constexprs = dict(LORA=lora, HAS_BIAS=True, BLOCK_M=bm, BLOCK_N=block_n, BLOCK_K=bk, RANK_PAD=r,
                      GROUP_M=8, NUM_PROGRAMS=132, WARP_SPECIALIZE=warp_specialize)
    return compile_sm90(as_launched(_persistent_kernel, signature, constexprs), num_warps, num_stages)


@pytest.mark.parametrize("lora", [True, False], ids=["fused", "core"])
@pytest.mark.parametrize("warp_specialize", [False, True], ids=["plain", "ws"])
def test_the_persistent_form_compiles_for_sm90_within_shared_memory(lora, warp_specialize):
    kernel = compiled(128, 8, 3, lora, warp_specialize)
    assert kernel.asm["cubin"] and 0 < kernel.metadata.shared <= SMEM_LIMIT


def test_a_wide_deep_tile_needs_more_shared_memory_than_sm90_has():
    # 128 x 256 columns with 4 stages: kernel_bench's PERSISTENT_GRID keeps it, and it counts as an error there
    assert compiled(256, 8, 4, True).metadata.shared > SMEM_LIMIT


def compiled_fused(rows: int, rank: int, dtype: str, early_b: bool = False):
    """The fused kernel at choose_tiles' default for `rows` and `rank` in `dtype`, compiled as
    launched; its tiles."""
    from rearqa.kernels.lora_linear.tiling import choose_tiles
    from rearqa.kernels.lora_linear.triton import _lora_kernel

    tiles = choose_tiles(rows, rank, itemsize=4 if dtype == "fp32" else 2, early_b=early_b)
    signature = {name: f"*{dtype}" for name in ("x", "w", "a", "b", "bias", "y")}
    signature |= {name: "i32" for name in ("M", "N", "K", "rank", "s_xm", "s_xk", "s_wn", "s_wk", "s_ar", "s_ak",
                                           "s_bn", "s_br", "s_ym", "s_yn")}
    signature["scaling"] = "fp32"
    constexprs = dict(HAS_BIAS=True, BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                      RANK_PAD=tiles.rank_pad, N_TILES=tiles.n_tiles,
                      PRECISION="ieee" if dtype == "fp32" else "tf32", EARLY_B=tiles.early_b)
    kernel = compile_sm90(as_launched(_lora_kernel, signature, constexprs), tiles.num_warps, tiles.num_stages)
    return kernel, tiles


@pytest.mark.parametrize("rows", [1, 64, 32768])
@pytest.mark.parametrize("rank,dtype", [(64, "fp32"), (128, "fp32"), (128, "bf16"), (16, "bf16")])
def test_the_fused_kernels_default_tiles_fit_sm90s_shared_memory(rows, rank, dtype):
    from rearqa.kernels.lora_linear.tiling import staged_bytes

    kernel, tiles = compiled_fused(rows, rank, dtype)
    assert kernel.asm["cubin"] and kernel.metadata.shared <= SMEM_LIMIT
    estimate = staged_bytes(tiles, 4 if dtype == "fp32" else 2)
    # the estimate choose_tiles fits by: the compiler's count in fp32, an upper bound in bf16
    assert kernel.metadata.shared == estimate if dtype == "fp32" else kernel.metadata.shared <= estimate


def compiled_core(tiles, dtype: str, launched: bool = True):
    """lora_linear/gemm.py's core (the benchmark's Triton GEMM alone) at `tiles`, compiled as
    launched, or from the bare signature (`launched=False`)."""
    from triton.compiler import ASTSource

    from rearqa.kernels.lora_linear.gemm import _gemm_kernel

    signature = {name: f"*{dtype}" for name in ("x", "w", "y")}
    signature |= {name: "i32" for name in ("M", "N", "K", "s_xm", "s_xk", "s_wn", "s_wk", "s_ym", "s_yn")}
    constexprs = dict(BLOCK_M=tiles.block_m, BLOCK_N=tiles.block_n, BLOCK_K=tiles.block_k,
                      PRECISION="ieee" if dtype == "fp32" else "tf32")
    source = (as_launched(_gemm_kernel, signature, constexprs) if launched
              else ASTSource(_gemm_kernel, signature, constexprs=constexprs))
    return compile_sm90(source, tiles.num_warps, tiles.num_stages)


def test_a_16_bit_tile_asks_on_sm90_what_the_gpu_asked_only_when_compiled_as_launched():
    # session 24's GPU test: gemm_triton at 128 x 256, 8 warps, with the decode default's 128-wide K
    # step three stages deep, failed asking 294,912 bytes; compiled without the launch's
    # specialization it asks a third of that, which is how this file missed it
    from rearqa.kernels.lora_linear.tiling import LoraTiles, staged_bytes

    unfitted = LoraTiles(128, 256, 128, 16, 8, 3)
    assert compiled_core(unfitted, "bf16").metadata.shared == 294912 == staged_bytes(unfitted, 2, lora=False)
    assert compiled_core(unfitted, "bf16", launched=False).metadata.shared < 294912


@pytest.mark.parametrize("rows", [1, 64, 4096])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_the_gemm_cores_tiles_are_fitted_to_sm90s_shared_memory(rows, dtype):
    # gemm_triton's tiles: its defaults, and the GPU test's 128 x 256 with the stages and K step fitted
    from rearqa.kernels.lora_linear.tiling import choose_tiles, staged_bytes

    itemsize = 4 if dtype == "fp32" else 2
    for knobs in ({}, dict(block_m=128, block_n=256, num_warps=8)):
        tiles = choose_tiles(rows, 16, itemsize=itemsize, lora=False, **knobs)
        shared = compiled_core(tiles, dtype).metadata.shared
        assert shared <= SMEM_LIMIT and shared <= staged_bytes(tiles, itemsize, lora=False)


@pytest.mark.parametrize("rows", [1, 64, 4096])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_loading_b_before_the_k_loop_compiles_within_the_model_of_its_shared_memory(rows, dtype):
    # early_b (kernel_bench's fused_early_b columns) holds B's tile across the K loop, and the
    # compiler keeps it in shared memory: the model counts it (exact in fp32, a bound in bf16)
    from rearqa.kernels.lora_linear.tiling import staged_bytes

    kernel, tiles = compiled_fused(rows, 64, dtype, early_b=True)
    assert tiles.early_b and kernel.asm["cubin"] and kernel.metadata.shared <= SMEM_LIMIT
    estimate = staged_bytes(tiles, 4 if dtype == "fp32" else 2)
    assert kernel.metadata.shared == estimate if dtype == "fp32" else kernel.metadata.shared <= estimate


@pytest.mark.parametrize("block_m", [16, 64])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_the_split_decode_form_compiles_for_sm90_with_its_flag(block_m, dtype):
    # lora_linear/split.py: the column tiles spin on an acquire load of the producer's flag, and
    # the last resets it; the PTX must hold those atomics with their orders, within shared memory
    from rearqa.kernels.lora_linear.split import _split_kernel

    signature = {name: f"*{dtype}" for name in ("x", "w", "a", "b", "bias", "y", "xa_buf")}
    signature |= {"sync": "*i32"} | {name: "i32" for name in (
        "M", "N", "K", "rank", "s_xm", "s_xk", "s_wn", "s_wk", "s_ar", "s_ak", "s_bn", "s_br", "s_ym", "s_yn")}
    signature["scaling"] = "fp32"
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_N=16, BLOCK_K=128 if dtype == "bf16" else 64,
                      RANK_PAD=16, PRECISION="ieee" if dtype == "fp32" else "tf32")
    kernel = compile_sm90(as_launched(_split_kernel, signature, constexprs), 4, 4)
    ptx = kernel.asm["ptx"]
    assert kernel.asm["cubin"] and kernel.metadata.shared <= SMEM_LIMIT
    # the spin's atomic add of 0 is lowered to an acquire load; the flag is raised by a release
    assert "ld.global.gpu.acquire" in ptx or "atom.global.gpu.acquire" in ptx
    assert "atom.global.gpu.release.exch" in ptx and "atom.global.gpu.acq_rel.add" in ptx
    assert "ld.global.cg" in ptx  # x A^T read past the L1, where another multiprocessor wrote it


def mla_compile_report():
    """scripts/mla_compile_report.py, which compiles the MLA decode kernel's stage 1 and reads
    ptxas' report of it."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "mla_compile_report.py"
    spec = importlib.util.spec_from_file_location("mla_compile_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("heads", [32, 128])
def test_the_fp32_decode_tiles_do_not_spill_their_register_held_operands(heads):
    # fp32's "ieee" tl.dot is not a tensor-core op on Hopper: its operands are held in registers.
    # At 64 heads a program (128 heads) the frame was about 20 KB and the compile 38 s on the CPU,
    # at 32 (Llama-3-8B) 13 KB and 11 s; 16 heads a program: 0.8 KB and 4-6 s
    # (docs/results/kernels/compile-mla-cpu.json)
    report = mla_compile_report()
    tiles = report.decode_tiles(heads, "fp32")
    assert tiles.block_h == 16 and tiles.head_blocks == heads // 16
    kernel = report.compiled_decode(tiles, "fp32")
    assert kernel.metadata.shared <= SMEM_LIMIT and report.ptxas_report(kernel)["stack_frame_bytes"] < 2048
