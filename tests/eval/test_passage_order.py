"""The passage-order measurement's arithmetic (issue 14): where the reader read the answer, and
one order's answers paired with another's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rearqa.eval.passage_order import answer_position, metric_by_answer_position, order_effects


def _row(qid, given, holds, prediction="x", em=0.0, answers=("a",)):
    retrieved = ["p1", "p2", "p3"]
    return {"id": qid, "answers": list(answers), "prediction": prediction, "em": em, "f1": em,
            "contained": em, "retrieved_ids": retrieved,
            "retrieved_has_answer": [p in holds for p in retrieved], "given_ids": given}


def test_the_answer_position_follows_the_order_the_reader_read():
    assert answer_position(_row("q", ["p1", "p2", "p3"], {"p1"})) == 1
    assert answer_position(_row("q", ["p3", "p2", "p1"], {"p1"})) == 3
    assert answer_position(_row("q", ["p2", "p3", "p1"], {"p3", "p1"})) == 2  # the first one read
    assert answer_position(_row("q", ["p1", "p2", "p3"], set())) is None
    without_given = _row("q", [], {"p2"})
    del without_given["given_ids"]
    assert answer_position(without_given) == 2  # rows from before the option: retrieval order


def test_order_effects_pair_the_same_questions():
    base = [_row("a", [], {"p1"}, "Paris", 1.0), _row("b", [], set(), "Rome", 0.0),
            _row("c", [], set(), "Oslo", 0.0), _row("only-base", [], set(), "x", 1.0)]
    cand = [_row("c", [], set(), "Oslo", 0.0), _row("b", [], set(), "Milan", 0.0),
            _row("a", [], {"p1"}, "Lyon", 0.0), _row("only-cand", [], set(), "x", 0.0)]
    effects = order_effects(base, cand, n_resamples=200)
    assert effects["n"] == 3
    assert effects["changed"] == pytest.approx(2 / 3)  # b changed and kept its score
    em = effects["metrics"]["em"]
    assert em["mean_a"] == pytest.approx(1 / 3) and em["diff"] == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="share no question ids"):
        order_effects(base[:1], [_row("z", [], set())])
    with pytest.raises(ValueError, match="different gold answers"):
        order_effects([_row("a", [], set())], [_row("a", [], set(), answers=("b",))])


def test_metric_by_answer_position_groups_and_counts():
    rows = [_row("1", ["p1", "p2", "p3"], {"p1"}, em=1.0), _row("2", ["p3", "p2", "p1"], {"p1"}, em=0.0),
            _row("3", ["p2", "p1", "p3"], {"p1"}, em=1.0), _row("4", ["p1", "p2", "p3"], {"p1"}, em=0.0),
            _row("5", ["p1", "p2", "p3"], set(), em=0.0)]
    assert metric_by_answer_position(rows) == {
        "1": {"n": 2, "em": 0.5}, "2": {"n": 1, "em": 1.0}, "3": {"n": 1, "em": 0.0},
        "none": {"n": 1, "em": 0.0}}


def test_first_against_last_pairs_a_question_with_itself():
    from rearqa.eval.passage_order import first_against_last

    retrieval = [_row("a", ["p1", "p2", "p3"], {"p1"}, em=1.0),
                 _row("b", ["p1", "p2", "p3"], {"p2"}, em=1.0),        # read 2nd: not first or last
                 _row("c", ["p1", "p2", "p3"], {"p1", "p3"}, em=1.0)]  # two answer passages: left out
    reversed_ = [_row("a", ["p3", "p2", "p1"], {"p1"}, em=0.0),
                 _row("b", ["p3", "p2", "p1"], {"p2"}, em=0.0),
                 _row("c", ["p3", "p2", "p1"], {"p1", "p3"}, em=0.0)]
    shuffled = [_row("a", ["p2", "p3", "p1"], {"p1"}, em=1.0)]       # last again, answered this time
    effect = first_against_last([retrieval, reversed_, shuffled], n_resamples=200)
    assert effect["n"] == 1 and effect["first"] == 1.0 and effect["last"] == 0.5
    assert effect["diff"] == 0.5
    with pytest.raises(ValueError, match="both first and last"):
        first_against_last([retrieval])


RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "passage_order"


@pytest.mark.parametrize("name", ["ragft-cpu-vllm", "rear-cpu-vllm"])
def test_the_committed_table_is_what_the_archived_rows_give(name, tmp_path):
    """docs/backbone.md's passage-order tables: scripts/passage_order_report.py on the archived rows
    writes the committed JSON again (same bootstrap seed), the reference and REAR-against-rag-ft
    pairings included."""
    import importlib.util

    committed = json.loads((RESULTS / f"{name}.json").read_text())
    spec = importlib.util.spec_from_file_location("passage_order_report",
                                                  RESULTS.parents[2] / "scripts" / "passage_order_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    root = RESULTS.parents[2]
    argv = ["--runs", str(RESULTS / name), "--method", committed["method"], "--out", str(tmp_path / "r.json")]
    for split, check in committed.get("reference", {}).items():
        argv += ["--reference", f"{split}={root / check['rows']}"]
    if "against" in committed:
        argv += ["--against", f"{root / committed['against']['runs']}:{committed['against']['method']}"]
    report.main(argv)
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["splits"] == committed["splits"]
    assert again["first_against_last"] == committed["first_against_last"]
    strip = lambda refs: {split: {k: v for k, v in check.items() if k != "rows"}  # noqa: E731
                          for split, check in (refs or {}).items()}
    assert strip(again.get("reference")) == strip(committed.get("reference"))
    assert {**again.get("against", {}), "runs": None} == {**committed.get("against", {}), "runs": None}


def test_relevance_shift_reads_the_rank_heads_scores():
    from rearqa.eval.passage_order import relevance_shift

    def scored(qid, scores):
        row = _row(qid, [], set())
        row["citations"] = [{"id": pid, "relevance": value} for pid, value in scores.items()]
        return row

    before = [scored("a", {"p1": 0.5, "p2": -1.0}), scored("b", {"p1": 2.0})]
    after = [scored("a", {"p2": -1.25, "p1": 0.5}), scored("c", {"p1": 9.0})]
    assert relevance_shift(before, after) == {"pairs": 2, "max_abs": 0.25}
    assert relevance_shift(before, before) == {"pairs": 3, "max_abs": 0.0}
    unscored = [scored("a", {"p1": None})]
    assert relevance_shift(unscored, unscored) is None  # rag-ft's citations carry no score
