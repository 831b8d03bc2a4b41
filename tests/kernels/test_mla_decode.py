"""MLA absorbed decode: the Triton kernel against the torch reference (in float64) over dtypes,
awkward widths and lengths, batch 1 to 64, contiguous, strided and paged caches, and masks; the
reference's own maths and the tiling heuristics on any machine (conftest.py says where what runs)."""
from __future__ import annotations

import pytest
import torch

from rearqa.kernels import get_kernel
from rearqa.kernels.mla_decode import mla_decode
from rearqa.kernels.mla_decode.reference import mla_decode_reference
from rearqa.kernels.mla_decode.tiling import SMEM_BYTES, choose_tiles, default_pipeline, staged_bytes

LAYOUTS = ["contiguous", "strided", "paged16", "paged64"]


def make_case(lens, heads, rank, rope, dtype, device, layout="contiguous", mask=False, seed=0):
    """Random inputs of one decode step. strided: q and cache are views of joint [latent; rope]
    rows (vLLM's layout, non-contiguous); pagedN: pages of N tokens in shuffled blocks."""
    gen = torch.Generator().manual_seed(seed)
    batch, capacity = len(lens), max(lens)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    joint_q = rand(batch, heads, rank + rope)
    q_lat, q_rope = ((joint_q[..., :rank], joint_q[..., rank:]) if layout != "contiguous"
                     else (rand(batch, heads, rank), rand(batch, heads, rope)))
    table = None
    if layout.startswith("paged"):
        page = int(layout[5:])
        per_seq = -(-capacity // page)
        blocks = torch.randperm(batch * per_seq + 3, generator=gen)  # spare blocks never read
        table = blocks[:batch * per_seq].view(batch, per_seq).to(device=device, dtype=torch.int32)
        joint = rand(batch * per_seq + 3, page, rank + rope)
    else:
        joint = rand(batch, capacity, rank + rope)
    latent, k_rope = ((joint[..., :rank], joint[..., rank:]) if layout != "contiguous"
                      else (joint[..., :rank].contiguous(), joint[..., rank:].contiguous()))
    kv_mask = None
    if mask:
        kv_mask = torch.rand(batch, capacity, generator=gen) < 0.7
        kv_mask[torch.arange(batch), torch.tensor(lens) - 1] = True  # the query sees itself
        kv_mask = kv_mask.to(device)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    return (q_lat, q_rope, latent, k_rope, seq_lens, table, kv_mask), rank ** -0.5


def ground_truth(args, scale):
    """The reference on float64 copies of the inputs."""
    q_lat, q_rope, latent, k_rope, seq_lens, table, kv_mask = args
    wide = [t.double() for t in (q_lat, q_rope, latent, k_rope)]
    return mla_decode_reference(*wide, seq_lens, table, kv_mask, scale=scale)


def run_kernel(args, scale, **knobs):
    from rearqa.kernels.mla_decode.triton import mla_decode_triton

    return mla_decode_triton(*args, scale=scale, **knobs)


# ----------------------------------------------------------------- anywhere (CI included)
def test_reference_is_softmax_attention_over_the_latent():
    (q, qp, c, k, lens, _, _), scale = make_case([5, 2], 3, 8, 4, torch.float64, "cpu")
    out = mla_decode_reference(q, qp, c, k, lens, scale=scale)
    for b, n in enumerate(lens.tolist()):
        logits = scale * (q[b] @ c[b, :n].T + qp[b] @ k[b, :n].T)  # (H, n)
        torch.testing.assert_close(out[b], logits.softmax(-1) @ c[b, :n])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_reads_every_layout_alike(layout):
    args, scale = make_case([37, 1, 20], 4, 12, 6, torch.float64, "cpu", layout, mask=True)
    q, qp, c, k, lens, table, mask = args
    if table is not None:  # the same tokens, laid out contiguously
        from rearqa.kernels.mla_decode.reference import gather_pages
        c, k = gather_pages(c, table)[:, :37], gather_pages(k, table)[:, :37]
    want = mla_decode_reference(q.contiguous(), qp.contiguous(), c.contiguous(), k.contiguous(),
                                lens, None, mask, scale=scale)
    torch.testing.assert_close(mla_decode_reference(*args, scale=scale), want)


def test_the_op_runs_the_reference_off_cuda():
    args, scale = make_case([9, 4], 3, 16, 8, torch.float32, "cpu")
    assert get_kernel("mla_decode") is mla_decode and mla_decode.backend(*args[:5]) == "reference"
    torch.testing.assert_close(mla_decode(*args, scale=scale), mla_decode_reference(*args, scale=scale))


def test_tiles_pad_widths_and_split_small_batches():
    llama = choose_tiles(16, 32, 512, 64, 32768, 2)
    assert (llama.block_h, llama.head_blocks, llama.rank_pad, llama.rope_pad) == (32, 1, 512, 64)
    assert llama.num_splits == 8  # one wave: 132 // 16, one 221 KiB program a multiprocessor
    smol = choose_tiles(1, 9, 96, 64, 4096, 2)
    assert (smol.block_h, smol.rank_pad, smol.block_n) == (16, 128, 64)
    assert choose_tiles(64, 32, 512, 64, 32768, 2).num_splits == 2
    assert choose_tiles(16, 9, 96, 64, 32768, 2).num_splits == 24  # three 73 KiB programs an SM: 396 // 16
    assert choose_tiles(1, 9, 96, 64, 32768, 2).num_splits == 64  # capped at the largest count timed
    assert choose_tiles(1, 9, 96, 64, 4096, 2).num_splits == 32  # 4096 / 128 tokens a split
    assert choose_tiles(1, 32, 512, 64, 300, 2).num_splits == 1  # short: the merge would cost more
    assert choose_tiles(2, 128, 512, 64, 4096, 2).head_blocks == 2
    # fp32 holds its "ieee" dot operands in registers: 16 heads a program at a 512 latent, up to 64 at 128
    assert (wide32 := choose_tiles(16, 32, 512, 64, 32768, 4)).block_h == 16 and wide32.head_blocks == 2
    assert choose_tiles(2, 128, 512, 64, 4096, 4).head_blocks == 8
    assert choose_tiles(2, 128, 128, 32, 4096, 4).block_h == 64 and choose_tiles(1, 9, 96, 64, 100, 4).block_h == 16
    # heads a program asked for: the pipeline and head blocks follow it, and it must be a tile width
    asked = choose_tiles(64, 128, 512, 64, 3000, 4, block_h=64)
    assert (asked.block_h, asked.head_blocks) == (64, 2)
    assert (asked.block_n, asked.num_stages) == default_pipeline(512, 64, 4, None, 64)
    with pytest.raises(ValueError, match="block_h=24"):
        choose_tiles(1, 32, 512, 64, 100, 4, block_h=24)
    with pytest.raises(ValueError, match="block_n=24"):
        choose_tiles(1, 9, 96, 64, 100, 2, block_n=24)
    assert (llama.block_n, llama.num_warps, llama.num_stages) == (64, 4, 3)  # the H100 sweep's best
    # fp32 doubles the staged bytes: 64 x 3 stages of 512 + 64 would not fit, 32 x 3 does
    wide = choose_tiles(16, 32, 512, 64, 32768, 4)
    assert (wide.block_n, wide.num_stages) == (32, 3) and staged_bytes(32, 3, 512, 64, 4) <= SMEM_BYTES
    assert choose_tiles(16, 32, 512, 64, 32768, 4, block_n=64).num_stages == 1  # as asked, one stage
    tuned = choose_tiles(16, 32, 512, 64, 32768, 2, num_warps=4, num_stages=3)
    assert (tuned.num_warps, tuned.num_stages, tuned.num_splits) == (4, 3, 8)
    shallow = choose_tiles(16, 32, 512, 64, 32768, 2, block_n=16, num_stages=1)  # 18 KiB: 12 an SM
    assert shallow.num_splits == 64 and choose_tiles(2, 128, 512, 64, 4096, 2).block_n == 32
    with pytest.raises(ValueError, match="num_warps=3"):
        choose_tiles(1, 9, 96, 64, 100, 2, num_warps=3)
    with pytest.raises(ValueError, match="num_stages=0"):
        choose_tiles(1, 9, 96, 64, 100, 2, num_stages=0)


# ----------------------------------------------------------------- Triton kernel
def check_kernel(device, close_to, lens, shape, dtype, layout, mask=False, **knobs):
    args, scale = make_case(lens, *shape, dtype, device, layout, mask)
    close_to(run_kernel(args, scale, **knobs), ground_truth(args, scale), dtype)


DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SMALL_LENS = [[1], [7, 50, 33], [64, 65, 3, 129]]


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(3, 24, 8), (9, 96, 64)], ids=["3x24+8", "smollm2-96+64"])
def test_kernel_interpreted(interpreter_device, close_to, shape, layout, dtype):
    for lens in SMALL_LENS:
        check_kernel(interpreter_device, close_to, lens, shape, dtype, layout)


@pytest.mark.interpret
@pytest.mark.parametrize("knobs", [{"num_splits": 1}, {"num_splits": 7}, {"block_n": 16, "num_splits": 3},
                                   {"num_warps": 4, "num_stages": 3}])
def test_kernel_interpreted_splits_masks_and_empty_chunks(interpreter_device, close_to, knobs):
    # 7 splits of a 2-token sequence: most chunks are empty and must weigh nothing in the merge
    for layout in ("strided", "paged16"):
        check_kernel(interpreter_device, close_to, [2, 40, 17], (5, 40, 24), torch.float32, layout,
                     mask=True, **knobs)


@pytest.mark.interpret
def test_kernel_interpreted_wide_heads_take_two_programs(interpreter_device, close_to):
    check_kernel(interpreter_device, close_to, [20, 3], (80, 16, 16), torch.float32, "contiguous")


@pytest.mark.interpret
def test_kernel_interpreted_all_masked_row_is_zero(interpreter_device):
    args, scale = make_case([5], 3, 16, 16, torch.float32, "cpu", mask=True)
    args[-1][:] = False
    assert torch.equal(run_kernel(args, scale), torch.zeros(1, 3, 16))


GPU_SHAPES = {"llama3-8b-32x512+64": (32, 512, 64), "smollm2-9x96+64": (9, 96, 64),
              "smollm2-9x128+32": (9, 128, 32), "smollm2-9x192+64": (9, 192, 64),
              "odd-5x40+24": (5, 40, 24), "deepseek-128x512+64": (128, 512, 64)}
GPU_LENS = {"one": [1], "below-one-split": [33], "mixed": [4097, 1, 100, 2048],
            "batch64": [int(n) for n in torch.randint(1, 3000, (64,), generator=torch.Generator().manual_seed(3))]}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", list(GPU_SHAPES.values()), ids=list(GPU_SHAPES))
def test_kernel_on_gpu(gpu_device, close_to, shape, layout, dtype):
    for lens in GPU_LENS.values():
        check_kernel(gpu_device, close_to, lens, shape, dtype, layout)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernel_on_gpu_with_masks_and_forced_splits(gpu_device, close_to, layout):
    for knobs in ({}, {"num_splits": 1}, {"num_splits": 64}, {"block_n": 64, "num_splits": 9},
                  {"num_warps": 4, "num_stages": 3}):
        check_kernel(gpu_device, close_to, [32768, 5, 1000], (32, 512, 64), torch.bfloat16, layout,
                     mask=True, **knobs)


@pytest.mark.gpu
def test_the_op_runs_the_kernel_on_cuda(gpu_device, monkeypatch):
    monkeypatch.delenv("REARQA_KERNELS", raising=False)
    args, _ = make_case([10], 9, 96, 64, torch.bfloat16, gpu_device)
    assert mla_decode.backend(*args[:5]) == "triton"
