"""What SpAtten did to each answer, as a reader and an evaluation see it: per-example records of
a left-padded batch line up with the example read alone, a RAG answer's trace finds its passages
and the gold answer's tokens inside them, and a run's summary sums counts before dividing."""
from __future__ import annotations

import pytest
import torch

from rearqa.eval.backbone_cost import cost_summary
from rearqa.reader.backbone.spatten.evidence import PromptTrace, passage_spans
from rearqa.testing import tiny_llama, tiny_tokenizer

BUDGETS = "spatten:tokens=0.5,start_layer=1,recent=2"
SHORT = [{"role": "user", "content": "who wrote hamlet ?"}]
LONG = [{"role": "user", "content": "the tragedy hamlet was written by shakespeare in london . "
                                    "paris is the capital of france . who wrote hamlet ?"}]


@pytest.fixture(scope="module")
def reader_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-reader")
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_batched_records_line_up_with_each_prompt_read_alone(reader_dir):
    from rearqa.reader.engines.hf import HFEngine

    engine = HFEngine(reader_dir, "float32", backbone=BUDGETS)
    together = engine.generate_traced([SHORT, LONG], max_new_tokens=3)  # SHORT is left-padded
    alone = [engine.generate_traced([m], max_new_tokens=3)[0] for m in (SHORT, LONG)]
    for (text, cost, trace), (text1, cost1, trace1) in zip(together, alone):
        assert text == text1
        assert trace.text == trace1.text and trace.offsets == trace1.offsets
        assert trace.pruned_layer == trace1.pruned_layer  # the right row, without its padding
        assert cost["prompt_tokens"] == len(trace.offsets) == cost1["prompt_tokens"]
        assert cost["prefill_dense_flops"] == pytest.approx(cost1["prefill_dense_flops"])
    cost = together[1][1]
    assert cost["pruned_prompt_tokens"] == together[1][2].pruned > 0
    assert cost["prefill_flops"] < cost["prefill_dense_flops"]
    assert cost["linear_flops_per_token"] == 2 * sum(
        m.weight.numel() for m in engine.model.modules() if isinstance(m, torch.nn.Linear))
    plain = HFEngine(reader_dir, "float32").generate_traced([SHORT], max_new_tokens=3)
    assert plain[0][1:] == ({}, None)


def test_a_rag_answer_carries_its_cost_and_where_its_passages_are(reader_dir):
    from rearqa.eval.runner import _backbone_row
    from rearqa.reader.baseline import BaselineReader
    from rearqa.reader.config import ReaderConfig
    from rearqa.types import Passage

    config = ReaderConfig(engine="hf", method="rag", backbone=BUDGETS, max_passage_words=6,
                          max_new_tokens=3)
    reader = BaselineReader(config, reader_dir)
    passages = [Passage("a", "hamlet was written by shakespeare in london", "play"),
                Passage("b", "paris is the capital of france")]
    answer = reader.read_batch(["who wrote hamlet ?"], [passages])[0]
    assert answer.backbone_cost["prompt_tokens"] == len(answer.trace.offsets)
    shown = [answer.trace.text[a:b] for a, b in answer.trace.passages]
    assert shown == ["hamlet was written by shakespeare in ...", "paris is the capital of france"]
    example = type("Example", (), {"answers": ["Shakespeare"]})()
    row = _backbone_row(answer, example)
    assert row["evidence"]["answer_tokens"] == 1  # "shakespeare", inside passage a
    assert row["backbone_cost"] is answer.backbone_cost
    assert "trace" not in answer.to_dict() and answer.to_dict()["backbone_cost"]


def test_passage_spans_find_each_shown_body_even_when_repeated():
    text = "[1] x\nsame body\n\n[2] y\nsame body\n\nQ"
    assert passage_spans(text, ["same body", "same body"]) == [(6, 15), (23, 32)]
    with pytest.raises(ValueError, match="not in the rendered prompt"):
        passage_spans(text, ["missing"])


def test_a_trace_refuses_offsets_and_pruning_of_different_lengths():
    with pytest.raises(ValueError, match="pruning entries"):
        PromptTrace("a b", [(0, 1), (2, 3)], [-1])


def test_the_run_summary_sums_counts_before_dividing():
    def row(flops, dense, steps, evidence):
        cost = {"prefill_flops": flops, "prefill_dense_flops": dense, "decode_flops": flops / 10,
                "decode_dense_flops": dense / 10, "decode_steps": steps, "prompt_tokens": 100,
                "pruned_prompt_tokens": 40, "linear_flops_per_token": 1.0,
                "decode_kv_bytes": 5.0, "decode_dense_kv_bytes": 10.0}
        return {"backbone_cost": cost, "evidence": evidence}

    rows = [row(10.0, 100.0, 2, {"answer_tokens": 4, "pruned": 1, "by_layer": {"3": 1}}),
            row(90.0, 100.0, 6, {"answer_tokens": 0, "pruned": 0, "by_layer": {}}),
            {"prediction": "a row read without a backbone"}]
    summary = cost_summary(rows)
    assert summary["questions"] == 2
    assert summary["prefill_attention_flops_ratio"] == pytest.approx(0.5)  # (10 + 90) / 200
    assert summary["prefill_total_flops_ratio"] == pytest.approx((100 + 200) / (200 + 200))
    assert summary["question_attention_flops_ratio"] == pytest.approx((100 + 10) / (200 + 20))
    assert summary["decode_attention_flops_per_token"] == pytest.approx(10.0 / 8)
    assert summary["decode_kv_bytes_ratio"] == pytest.approx(0.5)
    assert summary["pruned_prompt_token_share"] == pytest.approx(0.4)
    assert summary["evidence"] == {"questions_with_evidence": 1, "answer_tokens": 4, "pruned": 1,
                                   "share": 0.25, "questions_with_pruned_evidence": 1,
                                   "by_layer": {3: 1}}
    assert cost_summary(rows[2:]) is None
