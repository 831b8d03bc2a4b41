"""The reader seam: what every reader offers, the question check, and the helpers they share.

A reader turns a question and its retrieved passages into an `Answer`. Every reader class
(registered by method name in `rearqa.reader.config.READERS`) offers

    read_batch(questions, passages, method) -> list[Answer]   batched, one Answer per question
    stream(question, passages, method, history)               yields the answer's text pieces
                                                              (str), then the finished Answer

so a streaming caller gets the final object from the stream itself, never from state parked on
the reader (STYLE rule 13). Questions are checked once, where they enter (the pipeline or the
server); readers take them as given.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

from rearqa.types import Answer, Passage

StreamItem = str | Answer  # a text piece, or the finished Answer as the last item


@runtime_checkable
class Reader(Protocol):
    """What the pipeline, the eval runner and the server need from a reader."""

    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        ...

    def stream(self, question: str, passages: list[Passage], method: str | None = None,
               history: list[dict] | None = None) -> Iterator[StreamItem]:
        ...


class QuestionError(ValueError):
    """A question that cannot be answered as given (empty, too long, not text)."""


def check_question(question: object, max_chars: int) -> str:
    if not isinstance(question, str):
        raise QuestionError(f"question must be text, got {type(question).__name__}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: from JSON "\ud800" or undecodable argv bytes
        raise QuestionError(f"question has a character that is not valid Unicode at position {exc.start} "
                            f"({question[exc.start]!r}); send UTF-8 text") from None
    question = question.strip()
    if not question:
        raise QuestionError("question is empty: type a question, e.g. 'Who wrote Hamlet?'")
    if len(question) > max_chars:
        raise QuestionError(f"question is {len(question)} characters long; the limit is {max_chars} "
                            "(reader.max_question_chars). Shorten it.")
    return question


def close_reader(reader: object) -> None:
    """Stop what a reader started (a vLLM engine's processes outlive it otherwise); readers
    without a `close` hold nothing to stop."""
    close = getattr(reader, "close", None)
    if close is not None:
        close()


def first_line(text: str) -> str:
    """The answer proper: small chat models often add a second paragraph or a list after it."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def stream_then_answer(pieces: Iterable[str], finish: Callable[[str], Answer]) -> Iterator[StreamItem]:
    """Yield each text piece as it comes, then `finish(the joined text)`: the Answer."""
    seen = []
    for piece in pieces:
        seen.append(piece)
        yield piece
    yield finish("".join(seen).strip())


def word_pieces(text: str) -> Iterator[str]:
    """`text` in word pieces that join back to it (for readers that finish an answer first)."""
    words = text.split(" ")
    for i, word in enumerate(words):
        yield word if i == len(words) - 1 else word + " "
