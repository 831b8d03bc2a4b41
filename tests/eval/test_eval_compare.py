"""Paired comparison of two or more small reports."""
from __future__ import annotations

import json

import pytest

from rearqa.eval.compare import compare_reports, write_comparison


def test_compare_two_reports(run, tmp_path, make_pipeline, wrong_answers):
    run(make_pipeline(wrong_answers), out="base")
    run(make_pipeline(), out="better")
    result = compare_reports([tmp_path / "base", tmp_path / "better" / "report.json"],
                             n_resamples=500)
    assert result["n_shared"] == 5 and [r["dropped"] for r in result["reports"]] == [0, 0]
    (pair,) = result["pairs"]
    em = pair["groups"]["all"]["em"]
    assert (em["mean_a"], em["mean_b"]) == (0.0, pytest.approx(2 / 5))
    assert em["diff"] == pytest.approx(2 / 5) and em["low"] >= 0.0
    assert pair["groups"]["numeric"]["em"]["n"] == 2
    assert pair["groups"]["answerable"]["contained"]["diff"] == pytest.approx(2 / 3)
    assert set(pair["groups"]["all"]) == {"em", "f1", "contained"}

    paths = write_comparison(result, tmp_path / "cmp")
    assert json.loads(paths["json"].read_text())["n_shared"] == 5
    md = paths["md"].read_text()
    assert "vs baseline" in md and "| all | em | 5 |" in md


def test_an_archived_run_compares_like_its_report(run, tmp_path, make_pipeline, wrong_answers):
    """docs/results/ keeps finished runs as rows.jsonl.gz: compare reads them as it reads report.json."""
    import gzip

    run(make_pipeline(wrong_answers), out="base")
    run(make_pipeline(), out="better")
    archived = tmp_path / "archived"
    archived.mkdir()
    with gzip.open(archived / "rows.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in json.loads((tmp_path / "better" / "report.json").read_text())["rows"])
    from_report = compare_reports([tmp_path / "base", tmp_path / "better"], n_resamples=200)
    from_archive = compare_reports([tmp_path / "base", archived], n_resamples=200)
    assert from_archive["pairs"][0]["groups"] == from_report["pairs"][0]["groups"]
    # archived with its report, the rows taken out of it (docs/results/spatten/sweep-gpu14)
    report = json.loads((tmp_path / "better" / "report.json").read_text())
    del report["rows"]
    (archived / "report.json").write_text(json.dumps(report))
    for path in (archived, archived / "report.json"):
        assert compare_reports([tmp_path / "base", path], n_resamples=200)["pairs"][0]["groups"] == \
            from_report["pairs"][0]["groups"]
    with pytest.raises(FileNotFoundError, match="archived rows.jsonl.gz"):
        compare_reports([tmp_path / "base", tmp_path / "nowhere"])


def test_compare_pairs_on_shared_ids_and_says_what_was_dropped(run, tmp_path, make_pipeline,
                                                                wrong_answers):
    run(make_pipeline(wrong_answers), out="base")
    run(make_pipeline(), out="better")
    run(make_pipeline(), out="short", limit=3)
    result = compare_reports([tmp_path / "base", tmp_path / "better", tmp_path / "short"],
                             metrics=("em", "recall@3"), n_resamples=200)
    assert result["n_shared"] == 3 and result["shared_ids"] == ["q1", "q2", "q3"]
    assert [r["dropped"] for r in result["reports"]] == [2, 2, 0]
    assert len(result["pairs"]) == 2
    assert result["pairs"][1]["groups"]["all"]["recall@3"]["diff"] == 0.0


def test_compare_rejects_bad_inputs(run, tmp_path, make_pipeline, wrong_answers):
    run(make_pipeline(wrong_answers), out="base")
    run(make_pipeline(), out="better")
    with pytest.raises(ValueError, match="valid metrics are.*'em'.*'recall@5'"):
        compare_reports([tmp_path / "base", tmp_path / "better"], metrics=("bleu",))
    with pytest.raises(ValueError, match="at least one other"):
        compare_reports([tmp_path / "base"])
    report = json.loads((tmp_path / "better" / "report.json").read_text())
    report["rows"][0]["answers"] = ["something else"]
    (tmp_path / "better" / "report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="different gold answers"):
        compare_reports([tmp_path / "base", tmp_path / "better"])
