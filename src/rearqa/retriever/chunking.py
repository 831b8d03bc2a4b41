"""Split document text into overlapping word windows (DPR-style ~100-word passages).

Windows of `chunk_words` words start every `chunk_words - chunk_overlap` words. A final window
that would add fewer than a tenth of `chunk_words` new words is merged into the previous one
instead (so a 103-word document is one 103-word chunk, not 100 words plus a 23-word tail that
repeats 20 of them). Text is re-joined with single spaces: passages are for reading and
retrieval, not for layout.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """One window of a document."""

    n: int  # chunk number within the document, from 0
    text: str  # the words of the window joined by single spaces
    start_word: int  # index of the window's first word in the document


def chunk_spans(n_words: int, chunk_words: int, chunk_overlap: int) -> list[tuple[int, int]]:
    """[start, end) word spans covering `n_words` words; empty text gives no spans."""
    if chunk_words < 1 or not 0 <= chunk_overlap < chunk_words:
        raise ValueError(f"chunk_words={chunk_words}, chunk_overlap={chunk_overlap}: need "
                         "chunk_words >= 1 and 0 <= chunk_overlap < chunk_words")
    if n_words == 0:
        return []
    step = chunk_words - chunk_overlap
    min_new = max(1, chunk_words // 10)
    spans = [(0, min(chunk_words, n_words))]
    while spans[-1][1] < n_words:
        start = spans[-1][0] + step
        end = min(start + chunk_words, n_words)
        if end - spans[-1][1] < min_new:  # tiny tail: extend the previous window instead
            spans[-1] = (spans[-1][0], n_words)
        else:
            spans.append((start, end))
    return spans


def chunk_text(text: str, chunk_words: int, chunk_overlap: int) -> list[Chunk]:
    """Split `text` on whitespace into overlapping chunks."""
    words = text.split()
    return [Chunk(n, " ".join(words[a:b]), a)
            for n, (a, b) in enumerate(chunk_spans(len(words), chunk_words, chunk_overlap))]


def page_of(start_word: int, page_word_offsets: list[int]) -> int:
    """1-based page holding word `start_word`, given each page's first-word offset."""
    return max(1, bisect.bisect_right(page_word_offsets, start_word))


def indexed_text(title: str, text: str, with_title: bool) -> str:
    """What the embedder and BM25 see for a chunk: "title\\ntext", or the text alone."""
    return f"{title}\n{text}" if with_title and title else text
