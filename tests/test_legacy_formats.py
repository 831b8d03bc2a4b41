"""What was written to disk before the structural refactor still opens and resumes.

tests/data/legacy/ was made with commit 0b05a6b (the last one before the house was restructured):
    rearqa index add tests/data/mini_corpus.jsonl -c tests/data/legacy/pipeline.yaml --home H
    rearqa eval --dataset tests/data/mini_questions.jsonl --out R --method rag --k 2 --limit 2 \
        --batch-size 2 -c tests/data/legacy/pipeline.yaml --home H
`collection/` is H/indexes/legacy-mini (SQLite docstore + FAISS index + sidecar) and `eval-run/`
is R without its plot. The shipped REAR checkpoint is covered by tests/reader/test_rear_shipped.py.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rearqa.environment import repo_root

LEGACY = Path(__file__).parent / "data" / "legacy"


@pytest.fixture(scope="module")
def legacy_pipeline(scratch_home):
    from rearqa.pipeline import Pipeline

    shutil.copytree(LEGACY / "collection", scratch_home / "indexes" / "legacy-mini")
    return Pipeline.from_yaml(LEGACY / "pipeline.yaml", home=scratch_home)


def test_old_collection_opens_and_searches(legacy_pipeline):
    collection = legacy_pipeline.collection
    assert collection.stats()["chunks"] == 6
    for kind in ("dense", "bm25", "hybrid"):
        best = legacy_pipeline.retrieve("Who wrote Hamlet?", 2, retriever=kind)
        assert best[0].id == "hamlet" and "Shakespeare" in best[0].text


def test_old_eval_run_resumes_and_its_report_compares(legacy_pipeline, tmp_path, monkeypatch):
    from rearqa.eval.compare import compare_reports
    from rearqa.eval.runner import EvalSettings, read_rows, run_eval

    monkeypatch.chdir(repo_root())  # the run's dataset path is relative to the checkout
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "eval-run", run)
    old_rows = read_rows(run / "rows.jsonl")
    settings = EvalSettings(dataset="tests/data/mini_questions.jsonl", method="rag", k=2, limit=3,
                            batch_size=2, out_dir=run)
    run_eval(legacy_pipeline, settings, progress=False, home=legacy_pipeline.home)

    rows = read_rows(run / "rows.jsonl")
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[:2] == old_rows  # resumed: the rows of the old run are kept, not recomputed
    saved = json.loads((run / "settings.json").read_text())
    assert len(saved["starts"]) == 2
    result = compare_reports([LEGACY / "eval-run" / "report.json", run / "report.json"],
                             n_resamples=200)
    assert json.dumps(result)  # plain data
