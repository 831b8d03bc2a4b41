"""Issue 16's kernel benchmark: MLA decode, fused LoRA and top-k against their torch baselines.

    python scripts/kernel_bench.py --out docs/results/kernels/bench-h200.json     # the GPU machine
    python scripts/kernel_bench.py --smoke --out /tmp/kernel-bench-smoke.json     # CPU: plumbing only
    (TRITON_INTERPRET=1 with triton installed: --smoke times the interpreted kernels too, which
    checks the kernel columns' plumbing; interpreted times mean nothing)

MLA decode (one query token per sequence, bf16): at the Llama-3-8B attention shape (32 heads,
MLA 512+64; GQA 8 KV heads of 128) and the SmolLM2 MLA widths (9 heads at 96+64, 128+32, 192+64;
GQA 3 KV heads of 64), B in {1, 16, 64} x T in {4K, 8K, 32K}: the Triton kernel (contiguous and
paged cache), the naive torch MLA reference (kernels/mla_decode/reference.py) and GQA decode
through torch SDPA. Bytes are the fewest a step must move (cache read once, q read, out written);
achieved bytes/s is set against a device-to-device copy measured in the same process (bytes read +
written). Fused LoRA: shapes 576->576, 576->192, 576->1536, 1536->576, M in {1, 16, 64, 4096,
32768}, r in {8, 16, 64}: the fused kernel, the base GEMM alone and unfused LoRA, each replayed
from a CUDA graph. Top-k: the Triton sort kernel against torch.topk at SpAtten's sizes.
Every time is the median of CUDA-event timings after warm-up; inputs smaller than a few L2s are
rotated among copies so that the cache is not what is measured (METHOD.md). The table is printed
last; the JSON holds every row and the issue's done-criteria checked.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rearqa.kernels.lora_linear.reference import lora_linear_reference  # noqa: E402
from rearqa.kernels.mla_decode.reference import mla_decode_reference  # noqa: E402
from rearqa.kernels.mla_decode.tiling import choose_tiles  # noqa: E402
from rearqa.kernels.topk.reference import topk_reference  # noqa: E402

MLA_SHAPES = {  # name: (heads, rank, rope, gqa kv heads, gqa head dim)
    "llama3-8b 512+64": (32, 512, 64, 8, 128),
    "smollm2 96+64": (9, 96, 64, 3, 64),
    "smollm2 128+32": (9, 128, 32, 3, 64),
    "smollm2 192+64": (9, 192, 64, 3, 64),
}
LORA_SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]
ROTATE_BYTES = 256 * 2**20  # rotate input copies until a timed set spans this (L2 is 60 MB)


class Timer:
    """Median milliseconds of `fn()`: CUDA events on the GPU, perf_counter in smoke mode."""

    def __init__(self, cuda: bool, reps: int, warmup: int) -> None:
        self.cuda, self.reps, self.warmup = cuda, reps, warmup

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.reps):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def graph(self, fn) -> float:
        """Median ms of replaying `fn` captured in a CUDA graph (launch gaps out of the number)."""
        if not self.cuda:
            return self(fn)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()  # compile and warm up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return self(graph.replay)

    def graph_sets(self, fn, sets: list) -> float:
        """Median ms per call of `fn(*inputs)`, one call per input set, all the sets' calls
        captured in one CUDA graph: no launch gaps or Python in the number, and the sets take
        turns so the L2 does not serve the inputs."""
        return self.graph(lambda: [fn(*inputs) for inputs in sets]) / len(sets)


def rotation_sets(make, set_bytes: int) -> list:
    """Enough copies of `make()`'s inputs to defeat the L2 when used in turn."""
    return [make() for _ in range(max(1, min(32, math.ceil(ROTATE_BYTES / max(1, set_bytes)))))]


def rotating(make, set_bytes: int):
    """A callable cycling over enough copies of `make()`'s inputs to defeat the L2; the copies are
    its `sets` (for Timer.graph_sets, so a graph replays the same inputs)."""
    sets = rotation_sets(make, set_bytes)
    state = {"i": 0}

    def next_set():
        state["i"] = (state["i"] + 1) % len(sets)
        return sets[state["i"]]
    next_set.sets = sets
    return next_set


def copy_bandwidth(timer: Timer, device: str, smoke: bool) -> float:
    """Bytes/s of a large device-to-device copy, counting bytes read plus bytes written."""
    n = 2**20 if smoke else 2**30  # 2 GiB of bf16 each way on the GPU
    src = torch.randn(n, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def mla_inputs(batch, ctx, heads, rank, rope, device, paged, dtype=torch.bfloat16):
    q_lat = torch.randn(batch, heads, rank, device=device, dtype=dtype)
    q_rope = torch.randn(batch, heads, rope, device=device, dtype=dtype)
    seq_lens = torch.full((batch,), ctx, device=device, dtype=torch.int32)
    if paged:  # pages of 64 tokens (FlashMLA's), blocks shuffled
        per_seq = ctx // 64
        table = torch.randperm(batch * per_seq, device=device).view(batch, per_seq).to(torch.int32)
        cache = torch.randn(batch * per_seq, 64, rank + rope, device=device, dtype=dtype)
    else:
        table, cache = None, torch.randn(batch, ctx, rank + rope, device=device, dtype=dtype)
    return q_lat, q_rope, cache[..., :rank], cache[..., rank:], seq_lens, table


def mla_bytes_of(shape_name, batch, ctx, itemsize=2) -> tuple[int, int]:
    """(cache bytes, the fewest bytes a decode step moves: cache read once, q read, out written)."""
    heads, rank, rope, _, _ = MLA_SHAPES[shape_name]
    cache_bytes = batch * ctx * (rank + rope) * itemsize
    return cache_bytes, cache_bytes + batch * heads * (2 * rank + rope) * itemsize


def mla_row(timer, shape_name, batch, ctx, device, kernel, copy_bps):
    heads, rank, rope, kv_heads, head_dim = MLA_SHAPES[shape_name]
    itemsize, scale = 2, (rank + rope) ** -0.5
    cache_bytes, mla_bytes = mla_bytes_of(shape_name, batch, ctx, itemsize)
    row = {"shape": shape_name, "batch": batch, "context": ctx, "mla_bytes": mla_bytes}
    contiguous = rotating(lambda: mla_inputs(batch, ctx, heads, rank, rope, device, False), cache_bytes)
    row["reference_ms"] = timer(lambda: mla_decode_reference(*contiguous(), scale=scale))
    if kernel is not None:
        row["kernel_ms"] = timer(lambda: kernel(*contiguous(), scale=scale))
        paged = rotating(lambda: mla_inputs(batch, ctx, heads, rank, rope, device, True), cache_bytes)
        row["kernel_paged_ms"] = timer(lambda: kernel(*paged(), scale=scale))
    gqa_bytes = 2 * batch * kv_heads * ctx * head_dim * itemsize
    gqa = rotating(lambda: gqa_inputs(batch, heads, kv_heads, ctx, head_dim, device), gqa_bytes)
    row["gqa_sdpa_ms"] = timer(lambda: F.scaled_dot_product_attention(*gqa(), enable_gqa=True))
    row["gqa_bytes"] = gqa_bytes
    best = row.get("kernel_ms", row["reference_ms"])
    row["floor_ms"] = mla_bytes / copy_bps * 1e3
    row["copy_fraction"] = mla_bytes / (best * 1e-3) / copy_bps
    if kernel is not None and timer.cuda:  # the same calls replayed from CUDA graphs (as engines decode)
        row["kernel_graph_ms"] = timer.graph_sets(lambda *a: kernel(*a, scale=scale), contiguous.sets)
        row["gqa_sdpa_graph_ms"] = timer.graph_sets(
            lambda *a: F.scaled_dot_product_attention(*a, enable_gqa=True), gqa.sets)
        row["copy_fraction_graph"] = mla_bytes / (row["kernel_graph_ms"] * 1e-3) / copy_bps
        row["reference_graph_ms"] = timer.graph_sets(
            lambda *a: mla_decode_reference(*a, scale=scale), contiguous.sets)
    return row


def gqa_inputs(batch, heads, kv_heads, ctx, head_dim, device):
    return (torch.randn(batch, heads, 1, head_dim, device=device, dtype=torch.bfloat16),
            torch.randn(batch, kv_heads, ctx, head_dim, device=device, dtype=torch.bfloat16),
            torch.randn(batch, kv_heads, ctx, head_dim, device=device, dtype=torch.bfloat16))


# the tile sweep (--parts mla_sweep): where the issue's MLA targets are judged, and SmolLM2's widths
SWEEP_POINTS = [("llama3-8b 512+64", 16, 32768), ("llama3-8b 512+64", 64, 32768), ("smollm2 96+64", 16, 32768)]
SWEEP_SPLITS = (None, 8, 17, 33, 66, 132, 256)  # None: the heuristic's count
SWEEP_BLOCK_N = (16, 32, 64)
SWEEP_WARPS = (4, 8)
SWEEP_STAGES = (1, 2, 3, 4)
# --sweep splits: the split count alone, at the default tiles, over the batches and lengths a rule
# for it must cover (the tile sweep above fixed block_n, warps and stages)
SPLIT_POINTS = ([("llama3-8b 512+64", b, 32768) for b in (1, 4, 16, 32, 64)]
                + [("llama3-8b 512+64", 16, 4096), ("llama3-8b 512+64", 16, 8192), ("llama3-8b 512+64", 64, 8192)]
                + [("smollm2 96+64", b, 32768) for b in (1, 16, 64)] + [("smollm2 96+64", 16, 8192)]
                + [("smollm2 192+64", b, 32768) for b in (16, 64)])
SPLIT_COUNTS = (None, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 17, 20, 24, 32, 33, 48, 64)


def mla_sweep_rows(timer, device, kernel, copy_bps, smoke: bool, mode: str = "tiles") -> list[dict]:
    """The kernel's graph-replayed time at SWEEP_POINTS for every num_splits x block_n x
    num_warps x num_stages; a combination the GPU cannot compile (shared memory, registers) is a
    row with its error, and the combination the op uses when given none (tiling.choose_tiles) is
    marked `default`. In smoke mode: one tiny point, two combinations (the plumbing only)."""
    points = [("smollm2 96+64", 2, 256)] if smoke else SWEEP_POINTS if mode == "tiles" else SPLIT_POINTS
    if smoke:
        grid = [(None, 16, 4, 1), (2, 16, 8, 2)] if mode == "tiles" else [(None, None, None, None), (2, None, None, None)]
    elif mode == "tiles":
        grid = [(s, n, w, st) for s in SWEEP_SPLITS for n in SWEEP_BLOCK_N for w in SWEEP_WARPS for st in SWEEP_STAGES]
    else:
        grid = [(s, None, None, None) for s in SPLIT_COUNTS]
    rows = []
    for shape_name, batch, ctx in points:
        heads, rank, rope, _, _ = MLA_SHAPES[shape_name]
        scale = (rank + rope) ** -0.5
        cache_bytes, mla_bytes = mla_bytes_of(shape_name, batch, ctx)
        tiles = choose_tiles(batch, heads, rank, rope, ctx, 2)
        default = ((None, tiles.block_n, tiles.num_warps, tiles.num_stages) if mode == "tiles"
                   else (None, None, None, None))
        sets = rotation_sets(lambda: mla_inputs(batch, ctx, heads, rank, rope, device, False), cache_bytes)
        for splits, block_n, warps, stages in grid:
            row = {"shape": shape_name, "batch": batch, "context": ctx, "num_splits": splits,
                   "block_n": block_n, "num_warps": warps, "num_stages": stages,
                   "default": (splits, block_n, warps, stages) == default,
                   "default_splits": tiles.num_splits}
            try:
                row["graph_ms"] = timer.graph_sets(
                    lambda *a: kernel(*a, scale=scale, num_splits=splits, block_n=block_n,
                                      num_warps=warps, num_stages=stages), sets)
                row["copy_fraction"] = mla_bytes / (row["graph_ms"] * 1e-3) / copy_bps
            except Exception as exc:  # noqa: BLE001 (an out-of-resources compile is a result here)
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        del sets
    return rows


def fastest_by_point(rows: list[dict], point_keys: tuple[str, ...], time_key: str):
    """(point, fastest row, the row marked `default` or None) for each point of a sweep, in order;
    rows without `time_key` (combinations that did not compile) are skipped."""
    for point in dict.fromkeys(tuple(r[k] for k in point_keys) for r in rows):
        timed = [r for r in rows if tuple(r[k] for k in point_keys) == point and time_key in r]
        if timed:
            yield point, min(timed, key=lambda r: r[time_key]), next((r for r in timed if r["default"]), None)


def best_of_sweep(rows: list[dict]) -> list[dict]:
    """The fastest combination at each point, beside the op's default one (the row marked `default`)."""
    return [{"shape": shape, "batch": batch, "context": context,
             "best": {k: best[k] for k in ("num_splits", "block_n", "num_warps", "num_stages")},
             "best_ms": best["graph_ms"], "best_copy_fraction": best["copy_fraction"],
             "default_ms": default["graph_ms"] if default else None}
            for (shape, batch, context), best, default
            in fastest_by_point(rows, ("shape", "batch", "context"), "graph_ms")]


def lora_sets(device, k: int, n: int, rank: int, rows: int) -> list:
    """Rotated copies (rotation_sets) of one fused-LoRA call's bf16 inputs x, W, A, B."""
    make = lambda: (torch.randn(rows, k, device=device, dtype=torch.bfloat16),  # noqa: E731
                    torch.randn(n, k, device=device, dtype=torch.bfloat16) * k ** -0.5,
                    torch.randn(rank, k, device=device, dtype=torch.bfloat16) * k ** -0.5,
                    torch.randn(n, rank, device=device, dtype=torch.bfloat16))
    return rotation_sets(make, 2 * (rows * k + n * k + rank * k + n * rank + rows * n))


def fits_rows(knobs: dict, rows: int) -> bool:
    """A sweep's tiles are worth timing at `rows` only up to block_m = the rows' power of two."""
    return knobs["block_m"] <= max(16, 1 << (rows - 1).bit_length())


def lora_row(timer, k, n, rank, rows, device, kernel):
    # each call on its own copy of the inputs for the *_sets_ms columns (below); the first copy
    # for the single replays
    sets = lora_sets(device, k, n, rank, rows)
    x, w, a, b = sets[0]
    row = {"shape": f"{k}->{n}", "rank": rank, "rows": rows,
           "base_ms": timer.graph(lambda: F.linear(x, w)),
           "unfused_ms": timer.graph(lambda: lora_linear_reference(x, w, a, b, scaling=2.0))}
    if kernel is not None:
        row["fused_ms"] = timer.graph(lambda: kernel(x, w, a, b, scaling=2.0))
        row["fused_over_base"] = row["fused_ms"] / row["base_ms"]
    # the same three with all the copies' calls in one graph: a single replay of one small GEMM is
    # mostly the graph launch (about 10 us on the H100), and one weight copy is served from the L2
    row["sets"] = len(sets)
    row["base_sets_ms"] = timer.graph_sets(lambda x, w, a, b: F.linear(x, w), sets)
    row["unfused_sets_ms"] = timer.graph_sets(
        lambda x, w, a, b: lora_linear_reference(x, w, a, b, scaling=2.0), sets)
    if kernel is not None:
        row["fused_sets_ms"] = timer.graph_sets(lambda x, w, a, b: kernel(x, w, a, b, scaling=2.0), sets)
        row["fused_over_base_sets"] = row["fused_sets_ms"] / row["base_sets_ms"]
        # the same tiles with B's and the bias's loads issued before the K loop (early_b): at decode
        # the kernel is latency-bound, and after the loop those loads add one memory round trip
        row["fused_early_b_sets_ms"] = timer.graph_sets(
            lambda x, w, a, b: kernel(x, w, a, b, scaling=2.0, early_b=True), sets)
        row["fused_early_b_over_base_sets"] = row["fused_early_b_sets_ms"] / row["base_sets_ms"]
    return row


def topk_row(timer, batch, length, device, kernel):
    scores = torch.randn(batch, length, device=device)
    k = max(1, int(0.6 * length))  # SpAtten's default token share
    row = {"batch": batch, "length": length, "k": k, "torch_ms": timer(lambda: topk_reference(scores, k))}
    if kernel is not None:
        row["kernel_ms"] = timer(lambda: kernel(scores, k))
    return row


# --parts lora_sweep: the fused LoRA kernel's tiles at r = 16 (the bar), every adapter shape
# and row count; decode rows (M <= 64) and GEMM rows get their own grids
# (session 19: wider column tiles, and n_tiles, so that fewer programs recompute x A^T; 4 stages,
# which every decode combination session 18 found fastest used)
LORA_SWEEP_SMALL = [dict(block_m=bm, block_n=bn, block_k=bk, num_warps=4, num_stages=4, n_tiles=t)
                    for bm in (16, 32, 64) for bn in (16, 32, 64, 128) for bk in (64, 128) for t in (1, 2, 4)]
LORA_SWEEP_LARGE = [dict(block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=4 if bk == 32 else 3,
                         n_tiles=t)
                    for bm in (64, 128) for bn in (64, 128) for bk in (32, 64) for w in (4, 8) for t in (1, 2, 3)]


def lora_sweep_rows(timer, device, kernel, smoke: bool, row_counts: list[int]) -> list[dict]:
    """Time per call of every LORA_SWEEP combination (block_m up to the rows' power of two) beside
    the base GEMM and the kernel's defaults, each timed as many calls on rotated input copies in
    one graph (Timer.graph_sets: no launch, no L2 reuse; session 18's single replays sat at the
    launch floor for M <= 64, so its decode choices were noise). A combination that does not
    compile is a row with its error. Smoke: one tiny point, two combinations (the plumbing only)."""
    shapes = [(16, 24)] if smoke else LORA_SHAPES
    row_counts = [3, 40] if smoke else row_counts
    rows_out = []
    for k, n in shapes:
        for m in row_counts:
            point_rows = []
            sets = lora_sets(device, k, n, 16, m)
            point = {"shape": f"{k}->{n}", "rank": 16, "rows": m, "sets": len(sets)}
            base = timer.graph_sets(lambda x, w, a, b: F.linear(x, w), sets)
            grid = ([{}, dict(block_m=16, block_n=16, block_k=16, num_warps=1, num_stages=1)] if smoke else
                    [{}] + [g for g in (LORA_SWEEP_SMALL if m <= 64 else LORA_SWEEP_LARGE)
                            if fits_rows(g, m) and g["block_n"] * g["n_tiles"] <= max(n, g["block_n"])])  # no idle column tiles
            for knobs in grid:
                row = {**point, **knobs, "default": not knobs, "base_ms": base}
                try:
                    row["fused_ms"] = timer.graph_sets(
                        lambda x, w, a, b, knobs=knobs: kernel(x, w, a, b, scaling=2.0, **knobs), sets)
                    row["fused_over_base"] = row["fused_ms"] / base
                except Exception as exc:  # noqa: BLE001 (an out-of-resources compile is a result here)
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                point_rows.append(row)
            rows_out += point_rows
            del sets
            print(json.dumps(min((r for r in point_rows if "fused_ms" in r), key=lambda r: r["fused_ms"],
                                 default=point)), flush=True)
    return rows_out


# --parts gemm: the fused kernel's distance from cuBLAS split in two (lora_linear/gemm.py): the
# Triton GEMM core alone (the fused op's default tiles, and the fastest of GEMM_GRID) against cuBLAS,
# and the fused op against that core at the same tiles
GEMM_GRID = [dict(block_m=bm, block_n=bn, block_k=64, num_warps=w, num_stages=st)
             for bm in (64, 128) for bn in (64, 128, 256) for w in (4, 8) for st in (3, 4)]


# and the persistent TMA form (lora_linear/persistent.py), core alone and fused, at its fastest of
# PERSISTENT_GRID
PERSISTENT_GRID = [dict(block_m=128, block_n=bn, block_k=64, num_warps=w, num_stages=st, warp_specialize=ws)
                   for bn in (128, 256) for w, st in ((4, 3), (8, 3), (8, 4)) for ws in (False, True)]


def fastest(timer, sets, call, grid) -> tuple[tuple[float, dict] | None, int]:
    """((ms, knobs) of the fastest of `grid` for call(x, w, a, b, **knobs), or None; how many
    combinations failed (an out-of-resources compile is a result here, not a stop)."""
    best, errors = None, 0
    for knobs in grid:
        try:
            ms = timer.graph_sets(lambda x, w, a, b, knobs=knobs: call(x, w, a, b, **knobs), sets)
        except Exception:  # noqa: BLE001
            errors += 1
            continue
        if best is None or ms < best[0]:
            best = (ms, knobs)
    return best, errors


def persistent_fields(timer, sets, persistent, smoke: bool, base_ms: float) -> dict:
    """The persistent TMA form's fastest core and fused times at one point (persistent None: none)."""
    if persistent is None:
        return {}
    grid = [dict(block_m=16, block_n=16, block_k=16, num_warps=4, num_stages=2, programs=2)] if smoke \
        else PERSISTENT_GRID
    out = {}
    for kind, call in (("core", lambda x, w, a, b, **kw: persistent(x, w, **kw)),
                       ("fused", lambda x, w, a, b, **kw: persistent(x, w, a, b, scaling=2.0, **kw))):
        best, errors = fastest(timer, sets, call, grid)
        out[f"persistent_{kind}_errors"] = errors
        if best is not None:
            out[f"persistent_{kind}_ms"], out[f"persistent_{kind}_best"] = best
            out[f"persistent_{kind}_over_base"] = best[0] / base_ms
    return out


def baseline_times(timer, sets, gemm, lora_kernel) -> dict:
    """Per call on the rotated `sets` in one graph: the base GEMM (cuBLAS), the Triton GEMM core
    at the fused op's default tiles, and the fused op."""
    return {"base_ms": timer.graph_sets(lambda x, w, a, b: F.linear(x, w), sets),
            "gemm_default_ms": timer.graph_sets(lambda x, w, a, b: gemm(x, w), sets),
            "fused_ms": timer.graph_sets(lambda x, w, a, b: lora_kernel(x, w, a, b, scaling=2.0), sets)}


def gemm_rows(timer, device, gemm, lora_kernel, smoke: bool, row_counts: list[int],
              persistent=None) -> list[dict]:
    """Per LoRA shape and row count (r = 16), per call on rotated copies in one graph: cuBLAS,
    the Triton GEMM core at the fused op's default tiles and at its fastest GEMM_GRID tiles (a
    combination that does not compile is skipped, its error counted), the fused op, and the
    persistent TMA form's core and fused at their fastest PERSISTENT_GRID tiles."""
    shapes = [(16, 24)] if smoke else LORA_SHAPES
    grid = [dict(block_m=16, block_n=16, block_k=16, num_warps=1, num_stages=1)] if smoke else GEMM_GRID
    out = []
    for k, n in shapes:
        for m in ([3] if smoke else row_counts):
            sets = lora_sets(device, k, n, 16, m)
            row = {"shape": f"{k}->{n}", "rank": 16, "rows": m, "sets": len(sets),
                   **baseline_times(timer, sets, gemm, lora_kernel)}
            best, errors = fastest(timer, sets, lambda x, w, a, b, **kw: gemm(x, w, **kw),
                                   [g for g in grid if fits_rows(g, m)])
            row["gemm_errors"] = errors
            if best is not None:  # else every combination failed to compile: the count says so
                row["gemm_best_ms"], row["gemm_best"] = best
                row["gemm_best_over_base"] = row["gemm_best_ms"] / row["base_ms"]
            row["gemm_default_over_base"] = row["gemm_default_ms"] / row["base_ms"]
            row["fused_over_gemm_default"] = row["fused_ms"] / row["gemm_default_ms"]
            row.update(persistent_fields(timer, sets, persistent, smoke, row["base_ms"]))
            del sets
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


# the split decode form (lora_linear/split.py): x A^T by one program of its own, the column tiles
# waiting on its flag; its knobs at each decode point (more than the multiprocessors count: refused)
SPLIT_GRID = [dict(block_n=bn, block_k=bk, num_warps=4, num_stages=st)
              for bn in (16, 32) for bk in (64, 128) for st in (3, 4)]


def split_rows(timer, device, gemm, lora_kernel, split, smoke: bool, row_counts: list[int]) -> list[dict]:
    """Per LoRA shape and decode row count (r = 16), per call on rotated copies in one graph: the
    base GEMM (cuBLAS), the Triton core alone and the fused op at their defaults, and the split
    form at its fastest SPLIT_GRID knobs, after its output is checked against the fused op's (a
    wrong answer is recorded and not timed)."""
    shapes = [(16, 24)] if smoke else LORA_SHAPES
    grid = [dict(block_n=16, block_k=16, num_warps=1, num_stages=1)] if smoke else SPLIT_GRID
    out = []
    for k, n in shapes:
        for m in ([3] if smoke else [r for r in row_counts if r <= 64]):
            sets = lora_sets(device, k, n, 16, m)
            row = {"shape": f"{k}->{n}", "rank": 16, "rows": m, "sets": len(sets),
                   **baseline_times(timer, sets, gemm, lora_kernel)}
            x, w, a, b = sets[0]
            want = lora_kernel(x, w, a, b, scaling=2.0).float()
            checked, errors = [], 0
            for knobs in grid:  # only a form whose answer is right is timed
                try:
                    got = split(x, w, a, b, scaling=2.0, **knobs).float()
                except Exception:  # noqa: BLE001 (too many programs, or a tile that does not compile)
                    errors += 1
                    continue
                if torch.allclose(got, want, rtol=2e-2, atol=2e-2):
                    checked.append(knobs)
                else:
                    row.setdefault("split_wrong", []).append(knobs)
            best, failed = fastest(timer, sets, lambda x, w, a, b, **kw: split(x, w, a, b, scaling=2.0, **kw),
                                   checked)
            row["split_errors"], row["split_checked"] = errors + failed, len(checked)
            if best is not None:
                row["split_ms"], row["split_best"] = best
                row["split_over_base"] = best[0] / row["base_ms"]
            row["gemm_default_over_base"] = row["gemm_default_ms"] / row["base_ms"]
            row["fused_over_base"] = row["fused_ms"] / row["base_ms"]
            del sets
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def best_of_lora_sweep(rows: list[dict]) -> list[dict]:
    """The fastest combination at each (shape, rows), beside the default's time."""
    knob_keys = ("block_m", "block_n", "block_k", "num_warps", "num_stages", "n_tiles")
    return [{"shape": shape, "rows": m, "best": {k: best[k] for k in knob_keys if k in best} or "default",
             "best_over_base": best["fused_over_base"],
             "default_over_base": default["fused_over_base"] if default else None}
            for (shape, m), best, default in fastest_by_point(rows, ("shape", "rows"), "fused_ms")]


def criteria(mla, lora, topk) -> dict:
    """The issue's done-criteria that this run can judge (None: not measured in this run)."""
    out = {}
    anchor = [r for r in mla if r["shape"].startswith("llama3") and r["batch"] == 16 and r["context"] == 32768]
    if anchor and "kernel_ms" in anchor[0]:
        r = anchor[0]
        out["mla_b16_t32k_copy_fraction>=0.70"] = r["copy_fraction"] >= 0.70
        out["mla_b16_t32k_vs_gqa_sdpa>=2.5x"] = r["gqa_sdpa_ms"] / r["kernel_ms"] >= 2.5
        if "kernel_graph_ms" in r:  # both replayed from CUDA graphs: no launch overhead in either
            out["mla_b16_t32k_copy_fraction>=0.70 (graphs)"] = r["copy_fraction_graph"] >= 0.70
            out["mla_b16_t32k_vs_gqa_sdpa>=2.5x (graphs)"] = r["gqa_sdpa_graph_ms"] / r["kernel_graph_ms"] >= 2.5
    if mla and all("kernel_ms" in r for r in mla):
        out["mla_beats_reference_everywhere"] = all(r["kernel_ms"] < r["reference_ms"] for r in mla)
    if mla and all("reference_graph_ms" in r for r in mla):
        out["mla_beats_reference_everywhere (graphs)"] = all(
            r["kernel_graph_ms"] < r["reference_graph_ms"] for r in mla)
    r16 = [r for r in lora if r["rank"] == 16 and "fused_over_base" in r]
    if r16:
        out["lora_r16_fused<=1.10x_base"] = all(r["fused_over_base"] <= 1.10 for r in r16)
        if all("fused_over_base_sets" in r for r in r16):
            out["lora_r16_fused<=1.10x_base (sets)"] = all(r["fused_over_base_sets"] <= 1.10 for r in r16)
    if topk and all("kernel_ms" in r for r in topk):
        out["topk_kernel_beats_torch_everywhere (ship it)"] = all(r["kernel_ms"] < r["torch_ms"] for r in topk)
    return out


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "-")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def kernels(smoke: bool) -> tuple:
    if smoke and os.environ.get("TRITON_INTERPRET") != "1":
        return None, None, None  # the references only: the script's plumbing, no kernel timing
    from rearqa.kernels.lora_linear.triton import lora_linear_triton
    from rearqa.kernels.mla_decode.triton import mla_decode_triton
    from rearqa.kernels.topk.triton import topk_triton
    return mla_decode_triton, lora_linear_triton, topk_triton


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file for every row")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, references only")
    ap.add_argument("--parts", nargs="+", default=["mla", "lora", "topk"],
                    choices=["mla", "lora", "topk", "mla_sweep", "lora_sweep", "gemm", "split"],
                    help="mla_sweep: the MLA kernel's tiles at SWEEP_POINTS (not in the default run); "
                         "split: the split decode form of the fused LoRA op at the decode --rows")
    ap.add_argument("--sweep", choices=["tiles", "splits"], default="tiles",
                    help="mla_sweep's grid: every tile at SWEEP_POINTS, or the split count alone at SPLIT_POINTS")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    ap.add_argument("--contexts", nargs="+", type=int, default=[4096, 8192, 32768])
    ap.add_argument("--ranks", nargs="+", type=int, default=[8, 16, 64])
    ap.add_argument("--rows", nargs="+", type=int, default=[1, 16, 64, 4096, 32768],
                    help="row counts M of the lora rows and of lora_sweep")
    ap.add_argument("--gemm-rows", nargs="+", type=int, default=[4096, 32768],
                    help="row counts M of the gemm part (where the GEMM core decides)")
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("kernel_bench: needs a CUDA GPU (run it on the GPU machine: docs/kernels.md); "
              "--smoke checks the script's plumbing on the CPU with the references only", file=sys.stderr)
        return 2
    if args.smoke:
        args.batches, args.contexts, args.rows, args.reps = [1, 2], [128, 256], [1, 16], 3
    device = "cuda" if cuda and not args.smoke else "cpu"
    timer = Timer(device == "cuda", args.reps, warmup=3 if args.smoke else 10)
    mla_kernel, lora_kernel, topk_kernel = kernels(args.smoke)
    copy_bps = copy_bandwidth(timer, device, args.smoke)
    print(f"device copy: {copy_bps / 1e12:.3f} TB/s (bytes read + written)", flush=True)
    mla, lora, topk, sweep, lsweep, gemm, splits = [], [], [], [], [], [], []
    with torch.inference_mode():
        if "split" in args.parts and lora_kernel is not None:  # its own part: its programs wait on each other
            from rearqa.kernels.lora_linear.gemm import gemm_triton
            from rearqa.kernels.lora_linear.split import lora_linear_split
            splits = split_rows(timer, device, gemm_triton, lora_kernel, lora_linear_split, args.smoke, args.rows)
        if "gemm" in args.parts and lora_kernel is not None:
            from rearqa.kernels.lora_linear.gemm import gemm_triton
            try:
                from rearqa.kernels.lora_linear.persistent import lora_linear_persistent
            except ImportError:  # a triton without tensor descriptors: no persistent rows
                lora_linear_persistent = None
            gemm = gemm_rows(timer, device, gemm_triton, lora_kernel, args.smoke, args.gemm_rows,
                             lora_linear_persistent)
        if "lora_sweep" in args.parts and lora_kernel is not None:
            lsweep = lora_sweep_rows(timer, device, lora_kernel, args.smoke, args.rows)
        if "mla_sweep" in args.parts and mla_kernel is not None:
            sweep = mla_sweep_rows(timer, device, mla_kernel, copy_bps, args.smoke, args.sweep)
        if "mla" in args.parts:
            for shape in MLA_SHAPES:
                for batch in args.batches:
                    for ctx in args.contexts:
                        mla.append(mla_row(timer, shape, batch, ctx, device, mla_kernel, copy_bps))
                        print(json.dumps(mla[-1]), flush=True)
        if "lora" in args.parts:
            for k, n in [(16, 24)] if args.smoke else LORA_SHAPES:  # smoke: the plumbing, one tiny shape
                for rank in args.ranks:
                    for rows in args.rows:
                        lora.append(lora_row(timer, k, n, rank, rows, device, lora_kernel))
                        print(json.dumps(lora[-1]), flush=True)
        if "topk" in args.parts:
            for batch in (1, 8, 32, 64):
                for length in ((256, 512) if args.smoke else (512, 1024, 2048, 4096)):
                    topk.append(topk_row(timer, batch, length, device, topk_kernel))
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
              "torch": torch.__version__, "smoke": args.smoke, "copy_bytes_per_s": copy_bps,
              "command": " ".join(sys.argv), "mla": mla, "lora": lora, "topk": topk,
              "mla_sweep": sweep, "mla_sweep_best": best_of_sweep(sweep),
              "lora_sweep": lsweep, "lora_sweep_best": best_of_lora_sweep(lsweep), "gemm": gemm,
              "split": splits,
              "criteria": criteria(mla, lora, topk)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(mla, ["shape", "batch", "context", "kernel_ms", "kernel_paged_ms", "reference_ms",
                      "gqa_sdpa_ms", "floor_ms", "copy_fraction", "kernel_graph_ms", "gqa_sdpa_graph_ms",
                      "reference_graph_ms", "copy_fraction_graph"]))
    if sweep:
        print(table(result["mla_sweep_best"], ["shape", "batch", "context", "best", "best_ms",
                                               "best_copy_fraction", "default_ms"]))
    print(table(lora, ["shape", "rank", "rows", "fused_ms", "base_ms", "unfused_ms", "fused_over_base", "sets",
                       "fused_sets_ms", "base_sets_ms", "unfused_sets_ms", "fused_over_base_sets",
                       "fused_early_b_over_base_sets"]))
    if lsweep:
        print(table(result["lora_sweep_best"], ["shape", "rows", "best", "best_over_base", "default_over_base"]))
    if gemm:
        print(table(gemm, ["shape", "rows", "base_ms", "gemm_default_ms", "gemm_best_ms", "fused_ms",
                           "gemm_default_over_base", "gemm_best_over_base", "fused_over_gemm_default", "gemm_best"]))
        if any("persistent_core_errors" in r for r in gemm):
            print(table(gemm, ["shape", "rows", "base_ms", "persistent_core_ms", "persistent_fused_ms",
                               "persistent_core_over_base", "persistent_fused_over_base",
                               "persistent_core_best", "persistent_fused_best"]))
    if splits:
        print(table(splits, ["shape", "rows", "base_ms", "gemm_default_ms", "fused_ms", "split_ms",
                             "gemm_default_over_base", "fused_over_base", "split_over_base", "split_best",
                             "split_checked", "split_errors"]))
    print(table(topk, ["batch", "length", "k", "kernel_ms", "torch_ms"]))
    print(json.dumps(result["criteria"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
