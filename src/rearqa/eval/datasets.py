"""QA evaluation sets: loading question files and selecting the "answerable" subset.

A question file is JSONL, one `{"id": ..., "question": ..., "answers": [...]}` per line. A bad
line is reported with its line number and the good lines are kept, so one broken record does not
cost a whole evaluation run.

The bundled corpus covers the QA sets only partly, so results are also reported on the
"answerable" subset: questions whose normalised gold answer occurs as whole words in some corpus
passage (DPR's has_answer). Many such matches are spurious (a bare year found in an unrelated
article), which is why every example also carries its `answer_type` (numeric/date vs other, by
`normalize.answer_type`) and reports are split by it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# assets is light to import (no torch); its QA_DATASETS is the one list of prepared data sets.
from rearqa import assets, data_prep
from rearqa.data_prep import QAExample
from rearqa.normalize import normalize_answer

# Names resolved through rearqa.assets (qa_file / answerable_ids); anything else is a JSONL path.
DATASET_NAMES = assets.QA_DATASETS
SUBSETS = ("all", "answerable")


@dataclass
class LineError:
    """A line of a question file that was skipped, and why."""

    path: str  # the file
    line: int  # 1-based line number
    message: str  # what was wrong and what would be accepted

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class QADataset:
    """The questions selected for one evaluation run."""

    name: str  # dataset name or file path as given
    source: str  # the JSONL file the questions came from
    subset: str  # "all" | "answerable"
    examples: list[QAExample]  # selected questions, in file order
    errors: list[LineError] = field(default_factory=list)  # skipped lines of the file
    answerable_ids: frozenset[str] | None = None  # ids answerable in the corpus; None = unknown


def _parse_line(text: str) -> tuple[QAExample | None, str | None]:
    """One JSONL line -> (example, None) or (None, error message)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object {{\"id\", \"question\", \"answers\"}}, got {type(record).__name__}"
    qid = record.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or str(qid).strip() == "":
        return None, f"'id' must be a non-empty string or integer, got {qid!r}"
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        return None, f"'question' must be a non-empty string, got {question!r}"
    answers = record.get("answers")
    if (not isinstance(answers, list) or not answers
            or not all(isinstance(a, str) and a.strip() for a in answers)):
        return None, f"'answers' must be a non-empty list of non-empty strings, got {answers!r}"
    return QAExample(id=str(qid), question=question.strip(), answers=answers), None


def load_jsonl_questions(path: str | Path) -> tuple[list[QAExample], list[LineError]]:
    """Read a question file; bad lines and repeated ids become `LineError`s, good lines are kept.

    Blank lines are skipped silently. For a repeated id the first occurrence is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist; expected a JSONL file with "
                                'one {"id", "question", "answers"} object per line')
    examples: list[QAExample] = []
    errors: list[LineError] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            example, message = _parse_line(text)
            if example is not None and example.id in first_line:
                example, message = None, (f"duplicate id {example.id!r} (first on line "
                                          f"{first_line[example.id]}); this line is skipped")
            if example is None:
                errors.append(LineError(str(path), number, message))
                continue
            first_line[example.id] = number
            examples.append(example)
    return examples, errors


def compute_answerable(examples: Sequence[QAExample], passage_texts: Iterable[str]) -> set[str]:
    """Ids of the questions whose normalised gold answer occurs as whole words in some passage.

    The same rule and matcher as the prepared answerable files (`data_prep.ANSWERABLE_RULE`).
    """
    wanted = {normalize_answer(a) for e in examples for a in e.answers} - {""}
    present = data_prep.answers_in_passages(wanted, passage_texts)
    return set(data_prep.answerable_question_ids(
        ({"id": e.id, "answers": e.answers} for e in examples), present))


def corpus_passage_texts(home: str | Path | None = None) -> list[str]:
    """Texts (not titles, as in DPR's has_answer) of the bundled corpus passages."""
    return [record["text"] for record in data_prep.read_jsonl(assets.corpus_file(home))]


def _select(examples: list[QAExample], subset: str, limit: int | None,
            answerable: frozenset[str] | None) -> list[QAExample]:
    if subset == "answerable":
        examples = [e for e in examples if e.id in answerable]
    return examples if limit is None else examples[:limit]


def load_dataset(name_or_path: str | Path, subset: str = "all", limit: int | None = None,
                 home: str | Path | None = None, passage_texts: Sequence[str] | None = None,
                 with_answerable: bool = True) -> QADataset:
    """Load an evaluation set by name (see DATASET_NAMES) or from a JSONL question file.

    subset="answerable" keeps the questions answerable in the corpus; `limit` then takes the
    first N in file order. For a named set the answerable ids come from rearqa.assets; for a file
    they are computed against `passage_texts` (default: the bundled corpus). With
    `with_answerable=False` and subset="all", a file's answerable ids are not computed (None).
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r}: choose one of {list(SUBSETS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}: must be a positive integer or None (all questions)")
    name = str(name_or_path)
    if name in DATASET_NAMES:
        source = Path(assets.qa_file(name, home))
        examples, errors = load_jsonl_questions(source)
        answerable = frozenset(assets.answerable_ids(name, home))
    else:
        source = Path(name_or_path)
        if source.suffix != ".jsonl" and not source.is_file():
            raise ValueError(f"dataset {name!r}: not a known name ({', '.join(DATASET_NAMES)}) "
                             "and not an existing .jsonl question file")
        examples, errors = load_jsonl_questions(source)
        answerable = None
        if subset == "answerable" or with_answerable:
            pool = examples if subset == "answerable" else _select(examples, "all", limit, None)
            texts = passage_texts if passage_texts is not None else corpus_passage_texts(home)
            answerable = frozenset(compute_answerable(pool, texts))
    selected = _select(examples, subset, limit, answerable)
    if not selected:
        detail = f"; {len(errors)} bad line(s), first: {errors[0]}" if errors else ""
        raise ValueError(f"dataset {name!r} (subset={subset}) has no usable questions{detail}")
    return QADataset(name=name, source=str(source), subset=subset, examples=selected,
                     errors=errors, answerable_ids=answerable)
