"""Question files with bad lines, the answerable subset, and dataset selection."""
from __future__ import annotations

import json

import pytest

from rearqa.data_prep import QAExample
from rearqa.eval import datasets
from rearqa.eval.datasets import compute_answerable, load_dataset, load_jsonl_questions

GOOD = [
    {"id": "q1", "question": "When did Elizabeth I die?", "answers": ["1603"]},
    {"id": "q2", "question": "Who sang Yesterday?", "answers": ["The Beatles", "Beatles"]},
    {"id": "q3", "question": "Largest US city?", "answers": ["New York City"]},
    {"id": 4, "question": "Capital of Mars?", "answers": ["Olympus"]},
]
CORPUS = ["The Beatles were a band from Liverpool.",
          "The number 16030 is not a year.",
          "New York City is the most populous city."]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_bad_lines_are_reported_with_line_numbers_and_good_lines_kept(tmp_path):
    lines = [json.dumps(GOOD[0]),
             "{not json",
             json.dumps({"id": "q5", "answers": ["x"]}),  # no question
             "",  # blank: skipped silently
             json.dumps({"id": "q6", "question": "?", "answers": "x"}),  # answers not a list
             json.dumps({"id": "q7", "question": "?", "answers": []}),
             json.dumps({"id": "q8", "question": "?", "answers": ["ok", 3]}),
             json.dumps(GOOD[1]),
             json.dumps({**GOOD[2], "id": "q1"}),  # duplicate id
             "[1, 2]",
             json.dumps(GOOD[3])]
    examples, errors = load_jsonl_questions(write_lines(tmp_path / "q.jsonl", lines))
    assert [e.id for e in examples] == ["q1", "q2", "4"]
    assert [e.line for e in errors] == [2, 3, 5, 6, 7, 9, 10]
    messages = {e.line: e.message for e in errors}
    assert "not valid JSON" in messages[2]
    assert "'question'" in messages[3]
    assert "'answers'" in messages[5] and "'answers'" in messages[6] and "'answers'" in messages[7]
    assert "duplicate id 'q1' (first on line 1)" in messages[9]
    assert str(errors[0]).startswith(f"{tmp_path / 'q.jsonl'}:2: ")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_jsonl_questions(tmp_path / "nope.jsonl")


def test_answer_type_is_computed():
    assert QAExample("a", "q?", ["1603", "March 3, 1990"]).answer_type == "numeric"
    assert QAExample("b", "q?", ["1603", "Elizabeth"]).answer_type == "other"


def test_compute_answerable_on_a_tiny_corpus():
    examples = [QAExample(str(g["id"]), g["question"], g["answers"]) for g in GOOD]
    # q1 "1603" only occurs inside "16030"; q2 matches after dropping the article; q3 multi-word
    assert compute_answerable(examples, CORPUS) == {"q2", "q3"}
    assert compute_answerable(examples, []) == set()


def test_load_dataset_from_file_subset_and_limit(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [json.dumps(g) for g in GOOD] + ["oops"])
    data = load_dataset(path, passage_texts=CORPUS)
    assert [e.id for e in data.examples] == ["q1", "q2", "q3", "4"]
    assert data.answerable_ids == {"q2", "q3"}
    assert [e.line for e in data.errors] == [5]
    data = load_dataset(path, subset="answerable", passage_texts=CORPUS)
    assert [e.id for e in data.examples] == ["q2", "q3"]
    data = load_dataset(path, subset="answerable", limit=1, passage_texts=CORPUS)
    assert [e.id for e in data.examples] == ["q2"]
    data = load_dataset(path, limit=2, with_answerable=False)
    assert [e.id for e in data.examples] == ["q1", "q2"] and data.answerable_ids is None
    with pytest.raises(ValueError, match="subset='some'"):
        load_dataset(path, subset="some")
    with pytest.raises(ValueError, match="limit=0"):
        load_dataset(path, limit=0)
    with pytest.raises(ValueError, match="no usable questions"):
        load_dataset(path, subset="answerable", passage_texts=["nothing matches"])
    with pytest.raises(ValueError, match="not a known name"):
        load_dataset("nq-tset")


def test_load_named_dataset_through_assets(tmp_path, monkeypatch):
    path = write_lines(tmp_path / "nq-test.jsonl", [json.dumps(g) for g in GOOD])
    monkeypatch.setattr(datasets.assets, "qa_file", lambda name, home=None: path)
    monkeypatch.setattr(datasets.assets, "answerable_ids", lambda name, home=None: {"q3", "4"})
    data = load_dataset("nq-test", subset="answerable")
    assert [e.id for e in data.examples] == ["q3", "4"]
    assert data.source == str(path)
