#!/usr/bin/env python3
"""Stage 1 of the MLA decode kernel compiled for sm_90 without a GPU: compile time, the stack frame
a thread needs and the bytes it spills (Triton's compiler, then its bundled `ptxas -v` over the
PTX), at `tiling.choose_tiles`' tiles or at a given number of heads a program. Needs triton, not a
GPU; prints a table and writes JSON.

    python scripts/mla_compile_report.py --out docs/results/kernels/compile-mla-cpu.json

The default rows are the GPU tests' 512+64 shapes (Llama-3-8B's 32 heads, DeepSeek's 128) in bf16
and fp32 for 64 sequences of up to 3,000 tokens, fp32 at the heads a program the tiling gave before
session 28 (all of a sequence's up to 64) and at today's. Compiled from the bare signature, not as
a launch specializes it; `tests/kernels/test_compile_sm90.py` uses the same functions.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.kernels.mla_decode.tiling import H200_SMS, choose_tiles  # noqa: E402

RANK, ROPE, BATCH, MAX_LEN = 512, 64, 64, 3000


def decode_tiles(heads: int, dtype: str, block_h: int | None = None):
    """choose_tiles' tiles for the default shape, with `block_h` heads a program when given."""
    itemsize = 4 if dtype == "fp32" else 2
    return choose_tiles(BATCH, heads, RANK, ROPE, MAX_LEN, itemsize, H200_SMS, block_h=block_h)


def compiled_decode(tiles, dtype: str):
    """The split kernel at `tiles` in `dtype`, compiled for sm_90 from its bare signature."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from rearqa.kernels.mla_decode.triton import _split_kernel

    signature = {name: f"*{dtype}" for name in ("q_lat", "q_rope", "latent", "k_rope")}
    signature |= {name: "*i32" for name in ("seq_lens", "block_table", "kv_mask")}
    signature |= {"part_out": "*fp32", "part_lse": "*fp32"}
    signature |= {name: "i32" for name in _split_kernel.arg_names
                  if name.startswith("s_") or name in ("heads", "num_splits", "page_size")}
    signature["scale_log2"] = "fp32"
    constexprs = dict(RANK=RANK, ROPE=ROPE, RANK_PAD=tiles.rank_pad, ROPE_PAD=tiles.rope_pad,
                      BLOCK_H=tiles.block_h, BLOCK_N=tiles.block_n, PAGED=False, HAS_MASK=False,
                      PRECISION="ieee" if dtype == "fp32" else "tf32")
    return triton.compile(ASTSource(_split_kernel, signature, constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=tiles.num_warps, num_stages=tiles.num_stages))


def ptxas_report(kernel) -> dict:
    """The bundled ptxas -v over the kernel's PTX: its stack frame and spill bytes a thread."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        log = subprocess.run([get_ptxas(90).path, "-v", "-arch=sm_90a", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True, check=True).stderr
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {"stack_frame_bytes": int(frame[1]), "spill_store_bytes": int(frame[2]),
            "spill_load_bytes": int(frame[3])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="JSON of the rows")
    args = ap.parse_args(argv)
    # every row compiles afresh: rows of equal tiles are the same kernel (heads is a runtime
    # argument), and one from Triton's cache would time nothing
    os.environ.setdefault("TRITON_ALWAYS_COMPILE", "1")
    cases = [(32, "bf16", None), (32, "fp32", 32), (32, "fp32", None),
             (128, "bf16", None), (128, "fp32", 64), (128, "fp32", None)]
    rows = []
    print("| heads | dtype | heads a program | block_n x stages | compile s | stack frame B | spill stores B | shared B |")
    print("|---|---|---|---|---|---|---|---|")
    for heads, dtype, block_h in cases:
        tiles = decode_tiles(heads, dtype, block_h)
        start = time.perf_counter()
        kernel = compiled_decode(tiles, dtype)
        seconds = time.perf_counter() - start
        row = {"heads": heads, "dtype": dtype, "block_h": tiles.block_h, "block_n": tiles.block_n,
               "num_stages": tiles.num_stages, "num_warps": tiles.num_warps, "compile_s": round(seconds, 1),
               "shared_bytes": kernel.metadata.shared, **ptxas_report(kernel)}
        rows.append(row)
        print(f"| {heads} | {dtype} | {row['block_h']} | {row['block_n']} x {row['num_stages']} | {row['compile_s']} "
              f"| {row['stack_frame_bytes']} | {row['spill_store_bytes']} | {row['shared_bytes']} |", flush=True)
    if args.out:
        import triton

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"triton": triton.__version__, "target": "sm_90a", "rank": RANK,
                                        "rope": ROPE, "batch": BATCH, "max_len": MAX_LEN, "rows": rows},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
