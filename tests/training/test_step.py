"""The fast training step on a tiny Llama (`world`, conftest.py): pre-tokenised rows collated into
length-sorted chunks give the losses and gradients of one padded batch, as the per-step
tokenisation did; the frozen base can be bf16 with fp32 trainable parameters; the benchmark runs.
"""
import json
from dataclasses import replace

import pytest
import torch

from rearqa.training.config import TrainConfig
from rearqa.training.data.token_rows import TokenRows, chunk_plan, collate_chunks
from rearqa.training.precision import resolve_base_dtype
from rearqa.training.train import build_task

CPU = torch.device("cpu")


def tiny(world, **kw):
    base = dict(base_model=str(world / "base"), snapshot=str(world / "snapshot"),
                splits=["nq-dev-train"], out=str(world / "unused"), depth=4, group_size=4,
                batch=2, grad_accum=1, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                max_answer_tokens=5, rag_k=2, max_passage_words=20, threads=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def perturbed_task(config):
    """The task with every trainable parameter moved off its initialisation (LoRA B != 0)."""
    torch.manual_seed(0)
    task = build_task(config, CPU)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in task.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    task.model.train()
    return task


def loss_and_grads(task, compute):
    task.model.zero_grad(set_to_none=True)
    parts = compute()
    parts["loss"].backward()
    grads = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.requires_grad}
    return {k: v.item() for k, v in parts.items()}, grads


def legacy_rear(task, indices, stage):
    """The step as it was: tokenise and right-pad per step, one masked forward pass."""
    from rearqa.training.data import rear_batch
    from rearqa.training.losses import RearLossConfig, compute_rear_loss, rear_lm_loss_and_rank
    from rearqa.training.rear_task import rear_input_options

    c = task.config
    b = rear_batch([task.groups[i] for i in indices], task.tokenizer, **rear_input_options(c))
    lm, rank = rear_lm_loss_and_rank(task.model, b["input_ids"], b["attention_mask"], b["labels"])
    loss_config = RearLossConfig(beta=c.beta, fine=stage == "main", bce_weight=c.bce_weight,
                                 minor_diff=c.minor_diff, neg_weight=c.neg_weight)
    return compute_rear_loss(None, b["labels"], rank, b["grades"], b["group_ids"], loss_config,
                             lm=lm), int(b["attention_mask"].sum()), b["input_ids"].numel()


def assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=1e-5, abs=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("stage", ["warmup", "main"])
def test_chunked_rear_step_equals_the_per_step_tokenised_batch(world, stage):
    task = perturbed_task(tiny(world))
    indices = [3, 0, 2, 1]  # every group: 16 rows of several lengths
    legacy, tokens, positions = legacy_rear(task, indices, stage)
    expected = loss_and_grads(task, lambda: legacy_rear(task, indices, stage)[0])
    assert all(g.abs().sum() > 0 for g in expected[1].values())
    for chunks in (1, 3):
        task.config = replace(task.config, row_chunks=chunks)
        batch = task.batch(indices, CPU)
        assert batch.tokens == tokens and batch.lm_tokens > 0
        assert (batch.padded_tokens == positions) if chunks == 1 else batch.padded_tokens < positions
        assert_same(loss_and_grads(task, lambda: task.losses(batch, stage)), expected)


def test_chunked_chat_step_equals_the_per_step_padded_batch(world):
    from rearqa.eval.bundle import Snapshot
    from rearqa.training.chat_task import RagTask
    from rearqa.training.data import chat_batch, encode_chat_example, pad_id
    from rearqa.training.losses import lm_loss_at_labels

    task = perturbed_task(tiny(world, method="rag-ft", token_budget=1))
    config = task.config
    examples = RagTask.examples(config, Snapshot(config.snapshot))
    encoded = [encode_chat_example(task.tokenizer, ex, config.max_answer_tokens) for ex in examples]
    assert task.lengths() == [len(ids) for ids, _ in encoded]
    indices = [2, 0, 3, 1]

    def legacy():
        b = chat_batch([encoded[i] for i in indices], pad_id(task.tokenizer))
        lm_model = task.model.get_base_model()
        hidden = lm_model.get_decoder()(input_ids=b["input_ids"],
                                        attention_mask=b["attention_mask"]).last_hidden_state
        lm = lm_loss_at_labels(hidden, lm_model.get_output_embeddings(), b["labels"])
        return {"loss": lm}

    expected = loss_and_grads(task, legacy)
    for chunks in (1, 3):
        task.config = replace(config, row_chunks=chunks)
        batch = task.batch(indices, CPU)
        got = loss_and_grads(task, lambda: {"loss": task.losses(batch, "lm")["loss"]})
        assert_same(got, expected)


def test_chunks_sort_by_length_and_give_back_the_row_order():
    lengths = [3, 7, 5, 7, 2]
    assert chunk_plan(lengths, 1) == [[0, 1, 2, 3, 4]]
    assert chunk_plan(lengths, 2) == [[1, 3], [2, 0, 4]]  # longest first, ties in order
    assert sorted(p for c in chunk_plan(lengths, 4) for p in c) == list(range(5))
    ids = [[10 + i] * n for i, n in enumerate(lengths)]
    labels = [[False] * (n - 1) + [True] for n in lengths]
    rows = TokenRows.from_lists(ids, labels, score_positions=[n - 2 for n in lengths])
    step = collate_chunks(rows, [4, 0, 1, 2, 3], 2, pad_token_id=0, device=CPU)
    assert [tuple(c.input_ids.shape) for c in step.chunks] == [(2, 7), (3, 5)]
    assert step.tokens == sum(lengths) and step.padded_tokens == 2 * 7 + 3 * 5
    assert step.lm_tokens == 5
    first = torch.cat([c.input_ids[:, 0] for c in step.chunks])
    assert first[step.order].tolist() == [14, 10, 11, 12, 13]  # the micro-batch's order again
    targets = torch.cat([c.lm_targets for c in step.chunks])
    assert targets[step.order].tolist() == [14, 10, 11, 12, 13]  # one label per row, in order


def test_bf16_base_keeps_what_trains_in_fp32(world):
    config = tiny(world, base_dtype="bfloat16", dtype="bfloat16")
    torch.manual_seed(0)
    task = build_task(config, CPU)
    frozen = {p.dtype for p in task.model.parameters() if not p.requires_grad}
    trainable = {n: p for n, p in task.model.named_parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for p in trainable.values()} == {torch.float32}
    assert any("trainable_tokens" in n for n in trainable) and any("lora_" in n for n in trainable)
    task.model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as on CUDA, where this is the default
        parts = task.losses(task.batch([0, 1], CPU), "main")
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
    rows = [p for n, p in trainable.items() if "trainable_tokens" in n]
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable.values())
    assert all(p.grad.abs().sum() > 0 for p in rows)  # the new token rows learn through the cast
    # auto: bf16 only when training on CUDA under bf16 autocast; the CPU default stays fp32.
    assert resolve_base_dtype(tiny(world), CPU, None) == torch.float32
    assert resolve_base_dtype(tiny(world), torch.device("cuda"), torch.bfloat16) == torch.bfloat16
    assert resolve_base_dtype(tiny(world, dtype="float32"), torch.device("cuda"), None) == \
        torch.float32


def test_benchmark_reports_throughput_on_the_cpu(world):
    from rearqa.training.benchmark import bench_method, table

    row = bench_method(tiny(world, row_chunks=2), warmup=1, steps=2)
    assert row["tokens_per_s"] > 0 and row["padded_tokens_per_s"] >= row["tokens_per_s"]
    for key in ("s_per_step", "padding_share", "peak_memory_gib", "mfu", "build_s", "tokenise_s",
                "frozen_params", "trainable_params", "peak_tflops", "host_syncs_per_step"):
        assert key in row
    assert "tok/s" in table([row]) and json.dumps(row)
