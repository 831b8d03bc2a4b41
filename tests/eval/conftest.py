"""A tiny QA set, corpus and fake pipeline for the runner and compare tests.

The fake returns canned passages and answers: the runner and compare code is pure bookkeeping,
so what matters is which questions were asked, what was written and what was aggregated.
Tests get the fake through the `make_pipeline` fixture (pytest runs with --import-mode=importlib,
so test modules cannot import helpers by module name).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rearqa.eval.datasets import load_dataset
from rearqa.eval.runner import EvalSettings, run_eval
from rearqa.types import Answer, Citation, Passage

PASSAGES = {
    "p-liverpool": Passage("p-liverpool", "Liverpool is a city in England.", "Liverpool", 0.9),
    "p-beatles": Passage("p-beatles", "The Beatles were a band from Liverpool.", "The Beatles", 0.8),
    "p-elizabeth": Passage("p-elizabeth", "Queen Elizabeth I died in 1603.", "Elizabeth I", 0.7),
    "p-nyc": Passage("p-nyc", "New York City is the most populous US city.", "New York City", 0.6),
    "p-number": Passage("p-number", "16030 is a number, not a year.", "16030", 0.5),
}
CORPUS_TEXTS = [p.text for p in PASSAGES.values()]
QUESTIONS = [  # id, question, answers, first rank holding an answer in the fake's ranking
    ("q1", "When did Elizabeth I die?", ["1603"]),  # numeric, answerable, rank 1
    ("q2", "Who sang Yesterday?", ["The Beatles"]),  # other, answerable, rank 3
    ("q3", "Largest US city?", ["New York City"]),  # other, answerable, rank 5
    ("q4", "Capital of Mars?", ["Olympus"]),  # other, not answerable
    ("q5", "How many moons has Mars?", ["two", "2"]),  # numeric, not answerable
]
RANKING = {
    "When did Elizabeth I die?": ["p-elizabeth", "p-number", "p-liverpool", "p-beatles", "p-nyc"],
    "Who sang Yesterday?": ["p-liverpool", "p-number", "p-beatles", "p-elizabeth", "p-nyc"],
    "Largest US city?": ["p-liverpool", "p-number", "p-beatles", "p-elizabeth", "p-nyc"],
}
DEFAULT_RANKING = list(PASSAGES)
GOOD_ANSWERS = {"When did Elizabeth I die?": "1603", "Who sang Yesterday?": "It was the Beatles.",
                "Largest US city?": "Los Angeles", "Capital of Mars?": "Olympus",
                "How many moons has Mars?": "3"}


class FakeConfig:
    def __init__(self, model: str):
        self.model = model

    def to_dict(self) -> dict:
        return {"reader": {"model": self.model, "max_new_tokens": 32}, "k": 5}


class FakePipeline:
    """Canned retrieval and answers; records every call; can fail on the n-th batch."""

    def __init__(self, answers: dict[str, str] | None = None, fail_on_batch: int | None = None,
                 model: str = "fake"):
        self.answers = GOOD_ANSWERS if answers is None else answers
        self.fail_on_batch = fail_on_batch
        self.config = FakeConfig(model)
        self.retrieve_calls: list[tuple[list[str], int, str]] = []
        self.read_calls: list[tuple[list[str], list[list[str]], str]] = []

    @property
    def questions_seen(self) -> list[str]:
        return [q for questions, _, _ in self.retrieve_calls for q in questions]

    def retrieve_batch(self, questions, k, retriever):
        self.retrieve_calls.append((list(questions), k, retriever))
        if len(self.retrieve_calls) == self.fail_on_batch:
            raise KeyboardInterrupt("simulated interruption")
        return [[PASSAGES[pid] for pid in RANKING.get(q, DEFAULT_RANKING)[:k]] for q in questions]

    def read_batch(self, questions, passages, method):
        self.read_calls.append((list(questions), [[p.id for p in ps] for ps in passages], method))
        return [Answer(q, self.answers[q], [Citation(p) for p in ps], method)
                for q, ps in zip(questions, passages)]


@pytest.fixture
def qa_path(tmp_path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"id": i, "question": q, "answers": a}) + "\n"
                            for i, q, a in QUESTIONS), encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path, qa_path):
    """run(pipeline, out="run", **settings) -> report, on the tiny set with its tiny corpus."""
    def _run(pipeline, out: str = "run", overwrite: bool = False, **overrides):
        fields = {"dataset": str(qa_path), "k": 2, "recall_ks": (1, 3, 5), "batch_size": 2,
                  "out_dir": tmp_path / out, **overrides}
        settings = EvalSettings(**fields)
        dataset = load_dataset(qa_path, settings.subset, settings.limit,
                               passage_texts=CORPUS_TEXTS)
        return run_eval(pipeline, settings, progress=False, overwrite=overwrite, dataset=dataset)
    return _run


@pytest.fixture
def make_pipeline():
    """make_pipeline(answers=None, fail_on_batch=None, model="fake") -> FakePipeline."""
    return FakePipeline


@pytest.fixture
def wrong_answers() -> dict[str, str]:
    return {q: "no idea" for q in GOOD_ANSWERS}
