"""The resumable evaluation runner, with a fake pipeline (pure bookkeeping)."""
from __future__ import annotations

import json

import pytest

from rearqa.config_errors import ConfigError
from rearqa.eval import datasets
from rearqa.eval.runner import EvalSettings, ResumeError, read_rows, run_eval, write_eval_report


def rows_in(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_full_run_writes_rows_and_reports(run, tmp_path, make_pipeline):
    pipeline = make_pipeline()
    report = run(pipeline)
    out = tmp_path / "run"
    for name in ("settings.json", "rows.jsonl", "report.json", "report.md", "recall_at_k.png"):
        assert (out / name).is_file(), name
    assert (out / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    # retrieval fetches max(k, max(recall_ks)) = 5; the reader gets the top k = 2
    assert {k for _, k, _ in pipeline.retrieve_calls} == {5}
    assert all(len(ids) == 2 for _, batch, _ in pipeline.read_calls for ids in batch)

    assert report["complete"] and report["n_rows"] == 5
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["q1"]["prediction"] == "1603" and rows["q1"]["em"] == 1.0
    assert rows["q1"]["retrieved_ids"] == ["p-elizabeth", "p-number"]
    assert rows["q1"]["retrieved_has_answer"] == [True, False]
    assert rows["q1"]["retrieved_scores"] == [0.7, 0.5]
    assert [rows[q]["first_hit_rank"] for q in ("q1", "q2", "q3", "q4")] == [1, 3, 5, None]
    assert rows["q2"]["recall"] == {"1": 0.0, "3": 1.0, "5": 1.0}
    assert rows["q2"]["em"] == 0.0 and rows["q2"]["contained"] == 1.0
    assert rows["q2"]["length"] == 4.0
    assert [rows[q]["answerable"] for q in ("q1", "q2", "q3", "q4", "q5")] == [True] * 3 + [False] * 2
    assert rows["q5"]["answer_type"] == "numeric" and rows["q4"]["answer_type"] == "other"
    assert rows["q1"]["seconds"] >= 0 and rows["q1"]["passages_read"] == 2

    agg = report["aggregate"]
    assert set(agg) == {"all", "numeric", "other", "answerable", "answerable numeric",
                        "answerable other"}
    assert agg["all"]["n"] == 5 and agg["all"]["em"] == pytest.approx(2 / 5)
    assert agg["all"]["contained"] == pytest.approx(3 / 5)
    assert agg["all"]["recall@1"] == pytest.approx(1 / 5)
    assert agg["all"]["recall@5"] == pytest.approx(3 / 5)
    assert agg["answerable"]["n"] == 3 and agg["answerable"]["recall@3"] == pytest.approx(2 / 3)
    assert agg["numeric"]["n"] == 2 and agg["numeric"]["em"] == pytest.approx(1 / 2)
    low, high = agg["all"]["ci95"]["em"]
    assert 0.0 <= low <= agg["all"]["em"] <= high <= 1.0
    assert report["seed"] == 0 and "git_commit" in report and report["versions"]["python"]
    assert report["pipeline_config"]["reader"]["model"] == "fake"

    md = (out / "report.md").read_text()
    assert "| group | n | EM | F1 |" in md and "| answerable numeric |" in md
    assert json.loads((out / "report.json").read_text())["n_rows"] == 5


def test_closed_book_reads_no_passages_but_reports_recall(run, make_pipeline):
    pipeline = make_pipeline()
    report = run(pipeline, method="closed-book")
    assert all(ids == [] for _, batch, _ in pipeline.read_calls for ids in batch)
    assert {m for _, _, m in pipeline.read_calls} == {"closed-book"}
    assert report["aggregate"]["all"]["recall@5"] == pytest.approx(3 / 5)
    assert report["rows"][0]["passages_read"] == 0


def test_answerable_subset_has_no_answerable_split(run, make_pipeline):
    report = run(make_pipeline(), subset="answerable")
    assert [r["id"] for r in report["rows"]] == ["q1", "q2", "q3"]
    assert set(report["aggregate"]) == {"all", "numeric", "other"}


def test_interrupted_run_resumes_without_duplicating_rows(run, tmp_path, make_pipeline):
    rows_path = tmp_path / "run" / "rows.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run(make_pipeline(fail_on_batch=2))
    assert [r["id"] for r in rows_in(rows_path)] == ["q1", "q2"]  # the first batch was saved
    partial = write_eval_report(tmp_path / "run")  # a report of the unfinished run
    assert partial["n_rows"] == 2 and not partial["complete"]

    with rows_path.open("a") as f:  # a row torn by the interruption
        f.write('{"id": "q3", "question": "Lar')
    resumed = make_pipeline()
    report = run(resumed)
    assert resumed.questions_seen == ["Largest US city?", "Capital of Mars?",
                                      "How many moons has Mars?"]
    assert [r["id"] for r in rows_in(rows_path)] == ["q1", "q2", "q3", "q4", "q5"]
    assert report["complete"] and len(report["starts"]) == 2


def test_resume_with_other_settings_is_an_error(run, make_pipeline):
    run(make_pipeline())
    with pytest.raises(ResumeError, match=r"k: 2 -> 3.*--out.*--overwrite"):
        run(make_pipeline(), k=3)
    with pytest.raises(ResumeError, match=r"pipeline\.reader\.model: 'fake' -> 'tuned'"):
        run(make_pipeline(model="tuned"))
    again = make_pipeline(model="tuned")
    report = run(again, k=3, overwrite=True)
    assert len(again.questions_seen) == 5 and report["settings"]["k"] == 3


def test_resume_may_raise_the_limit(run, make_pipeline):
    run(make_pipeline(), limit=2)
    more = make_pipeline()
    report = run(more, limit=4, batch_size=3)  # limit and batch size may change on resume
    assert more.questions_seen == ["Largest US city?", "Capital of Mars?"]
    assert [r["id"] for r in report["rows"]] == ["q1", "q2", "q3", "q4"]
    fewer = run(make_pipeline(), limit=1)  # rows outside the selection stay out of the report
    assert fewer["n_rows"] == 1 and fewer["rows_outside_selection"] == 3


def test_run_loads_the_file_and_matches_against_the_corpus_file(tmp_path, qa_path, make_pipeline,
                                                                monkeypatch):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "c1", "title": "Queen", "text": "Elizabeth I died in 1603."}\n')
    monkeypatch.setattr(datasets.assets, "corpus_file", lambda home=None: corpus)
    settings = EvalSettings(str(qa_path), subset="answerable", out_dir=tmp_path / "run")
    report = run_eval(make_pipeline(), settings, progress=False)
    assert [r["id"] for r in report["rows"]] == ["q1"]


def test_rows_without_settings_is_an_error(run, tmp_path, make_pipeline):
    run(make_pipeline())
    (tmp_path / "run" / "settings.json").unlink()
    with pytest.raises(ResumeError, match="no settings.json"):
        run(make_pipeline())


def test_corrupt_row_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ResumeError, match=r"rows.jsonl:2: corrupt row"):
        read_rows(path)
    path.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(ResumeError, match="appears twice"):
        read_rows(path)


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "nq-tset"}, "dataset='nq-tset'"),
    ({"method": "rear-ish"}, "method='rear-ish'"),
    ({"retriever": "splade"}, "retriever='splade'"),
    ({"subset": "some"}, "subset='some'"),
    ({"k": 0}, "k=0"),
    ({"batch_size": True}, "batch_size=True"),
    ({"limit": -1}, "limit=-1"),
    ({"recall_ks": (0, 5)}, "recall_ks"),
])
def test_settings_reject_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        EvalSettings(**{"dataset": "nq-test", **overrides})


def test_settings_depth_and_normalised_recall_ks():
    settings = EvalSettings("nq-test", k=30, recall_ks=[20, 1, 5, 5])
    assert settings.recall_ks == (1, 5, 20) and settings.depth == 30
    assert EvalSettings("q.jsonl").to_dict()["recall_ks"] == [1, 5, 10, 20]


def test_the_reader_gets_its_passages_in_the_order_asked(run, make_pipeline):
    """Issue 14's passage-order runs: reversed and shuffled:SEED reorder only what the reader
    reads (given_ids); the retrieval columns keep the ranking; a shuffle is the same for a
    question in every run of a seed and differs across seeds; another order does not resume."""
    from rearqa.eval.passage_order import reorder

    order = {}
    for name in ("retrieval", "reversed", "shuffled:0", "shuffled:1"):
        pipeline = make_pipeline()
        report = run(pipeline, out=f"order-{name}", k=3, passage_order=name)
        read = [ids for _, batch, _ in pipeline.read_calls for ids in batch]
        rows = report["rows"]
        assert [r["given_ids"] for r in rows] == read
        order[name] = {r["id"]: (r["retrieved_ids"], r["given_ids"]) for r in rows}
    for qid, (ranked, given) in order["retrieval"].items():
        assert given == ranked and all(order[o][qid][0] == ranked for o in order)
        assert order["reversed"][qid][1] == ranked[::-1]
        assert sorted(order["shuffled:0"][qid][1]) == sorted(ranked)
        assert order["shuffled:0"][qid][1] == reorder(ranked, "shuffled:0", qid)
    assert any(order["shuffled:0"][q][1] != order["shuffled:1"][q][1] for q in order["retrieval"])
    with pytest.raises(ResumeError, match="passage_order"):
        run(make_pipeline(), out="order-reversed", k=3, passage_order="retrieval")
    with pytest.raises(ConfigError, match="shuffled:SEED"):
        EvalSettings(dataset="nq-test", passage_order="random")
