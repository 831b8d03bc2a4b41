"""Multi-turn chat: what a follow-up question retrieves with, and what the reader is told.

The rule is deliberately simple and deterministic (no model call, no query rewriting):

- A question is a *follow-up* when there is an earlier turn and the question either contains a
  referring word (`REFERRING_WORDS`: it, he, she, they, this, that, there ...) or has at most
  `SHORT_QUESTION_WORDS` words ("And Paris?", "Why?").
- The *anchor* of a conversation is its latest question that was not a follow-up (the first
  question always is one).
- A follow-up is retrieved with `anchor + " " + follow-up`, so "When did he paint it?" after
  "Who painted the Mona Lisa?" searches for both; any other question is retrieved as asked.
- The reader gets the last `HISTORY_TURNS` turns as chat messages (question, answer text without
  what the chat added to it) where it uses history (the baseline readers do; REAR reads each
  passage with the question alone, as it was trained).

Chat messages are Gradio's `{"role", "content"}` dicts; content may be a string or (Gradio 6)
a list of typed parts.
"""
from __future__ import annotations

import re

from rearqa.app.chat_answer import FOOTER_SEPARATOR, answer_of_message  # noqa: F401 (re-exported)

REFERRING_WORDS = frozenset({
    "it", "its", "itself", "he", "him", "his", "she", "her", "hers", "they", "them", "their",
    "theirs", "this", "that", "these", "those", "there",
})
SHORT_QUESTION_WORDS = 2  # a question of at most this many words continues the conversation
HISTORY_TURNS = 2  # earlier (question, answer) turns passed to the reader

_WORD = re.compile(r"[A-Za-z']+")


def message_text(content: object) -> str:
    """The text of a chat message's content (a string, or Gradio 6's list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return "".join(message_text(part) for part in content)
    return ""


def words(question: str) -> list[str]:
    return [w.lower().strip("'") for w in _WORD.findall(question)]


def is_follow_up(question: str) -> bool:
    """True when the question leans on an earlier turn (a referring word, or very short)."""
    tokens = words(question)
    return len(tokens) <= SHORT_QUESTION_WORDS or any(t in REFERRING_WORDS for t in tokens)


def anchor_question(previous_questions: list[str]) -> str | None:
    """The latest earlier question that was not a follow-up (the first one counts as one)."""
    for i in range(len(previous_questions) - 1, -1, -1):
        if i == 0 or not is_follow_up(previous_questions[i]):
            return previous_questions[i]
    return None


def retrieval_query(previous_questions: list[str], question: str) -> str:
    """What to search for: the question, or for a follow-up the anchor question plus it."""
    question = question.strip()
    anchor = anchor_question([q.strip() for q in previous_questions if q.strip()])
    if anchor is None or not is_follow_up(question):
        return question
    return f"{anchor} {question}"


def turns(history: list[dict]) -> list[tuple[str, str]]:
    """(question, answer text) pairs of a chat history; the answer loses what the chat added
    (footer, citation markers, escaping: chat_answer.answer_of_message), and a question still
    waiting for its answer is left out."""
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for message in history or []:
        role, text = message.get("role"), message_text(message.get("content"))
        if role == "user":
            question = text
        elif role == "assistant" and question is not None:
            pairs.append((question, answer_of_message(text)))
            question = None
    return pairs


def user_questions(history: list[dict]) -> list[str]:
    return [message_text(m.get("content")) for m in history or [] if m.get("role") == "user"]


def reader_history(history: list[dict], max_turns: int = HISTORY_TURNS) -> list[dict]:
    """The last `max_turns` answered turns as plain chat messages for the reader."""
    messages: list[dict] = []
    for question, answer in turns(history)[-max_turns:] if max_turns > 0 else []:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages
