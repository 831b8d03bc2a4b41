"""Chat prompts for the baseline readers (closed-book and standard RAG).

SmolLM2-Instruct answers well only through its chat template, so every prompt is a list of chat
messages; the engine applies the model's own template. Passage text goes in verbatim (cut to a
word budget) with its title, numbered so the model can refer to it.
"""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.types import Passage


@dataclass(frozen=True)
class PromptTemplate:
    """A system message and the user-message formats with and without passages."""

    system: str | None  # None: no system message (the model's template may add its own)
    closed_book: str  # format with {question}
    rag: str  # format with {passages} and {question}
    best_last: bool = False  # list passages in reverse rank order, the best next to the question


PROMPTS: dict[str, PromptTemplate] = {
    # Asks for a few words: exact match rewards a short span. On SmolLM2-135M a custom system
    # message made it ignore the passages, so this one keeps the template's default.
    "short": PromptTemplate(
        system=None,
        closed_book="Question: {question}\nAnswer in a few words.",
        rag="Context:\n{passages}\n\nQuestion: {question}\nAnswer in a few words.",
    ),
    # The same with the best passage nearest the question: a 135M model leans on what it read last.
    "short-best-last": PromptTemplate(
        system=None,
        closed_book="Question: {question}\nAnswer in a few words.",
        rag="Context:\n{passages}\n\nQuestion: {question}\nAnswer in a few words.",
        best_last=True,
    ),
    # A plain assistant prompt, as a chat user would write it.
    "chat": PromptTemplate(
        system="You are a helpful assistant. Answer from the passages when they help.",
        closed_book="{question}",
        rag="Passages:\n{passages}\n\nQuestion: {question}",
    ),
}


def get_prompt(name: str) -> PromptTemplate:
    try:
        return PROMPTS[name]
    except KeyError:
        raise ValueError(f"unknown prompt {name!r}; valid prompts are {sorted(PROMPTS)}") from None


def shown_text(passage: Passage, max_words: int) -> str:
    """A passage's text as a prompt shows it: its first `max_words` words."""
    words = passage.text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def format_passages(passages: list[Passage], max_words: int, best_last: bool = False) -> str:
    """Numbered passages ([1] is the best ranked), cut to `max_words` words each."""
    blocks = []
    numbered = list(enumerate(passages, start=1))
    for i, passage in reversed(numbered) if best_last else numbered:
        text = shown_text(passage, max_words)
        head = f"[{i}] {passage.title}" if passage.title else f"[{i}]"
        blocks.append(f"{head}\n{text}")
    return "\n\n".join(blocks)


def build_messages(question: str, passages: list[Passage] | None, template: PromptTemplate,
                   max_passage_words: int, history: list[dict] | None = None) -> list[dict]:
    """Chat messages for one question; `passages=None` or [] gives the closed-book prompt."""
    if passages:
        user = template.rag.format(passages=format_passages(passages, max_passage_words,
                                                            template.best_last),
                                   question=question)
    else:
        user = template.closed_book.format(question=question)
    system = [{"role": "system", "content": template.system}] if template.system else []
    return [*system, *(history or []), {"role": "user", "content": user}]
