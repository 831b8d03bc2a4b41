"""The baselines' training examples: the plain chat prompt and the answer to learn.

rag-ft and closed-book-ft fine-tune the plain model on the same questions and answer targets as
the REAR groups (rearqa.training.data.groups), with the chat prompt of `rearqa.reader.prompts`:
the dense top-k passages exactly as `BaselineReader` shows them (`rag_examples`), or none
(`closed_book_examples`). LM loss falls on the answer and the eos token only.
"""
from __future__ import annotations

from dataclasses import dataclass

from rearqa.training.data.groups import question_targets, train_rows


@dataclass
class ChatExample:
    """A baseline example: chat messages (rearqa.reader.prompts) and the answer to learn."""

    id: str
    messages: list[dict]
    target: str


def rag_examples(snapshot, splits: list[str], k: int = 3, depth: int = 20,
                 max_questions: int | None = None, prompt: str = "short",
                 max_passage_words: int = 150) -> list[ChatExample]:
    """Standard-RAG fine-tuning examples: the chat prompt with the dense top-k passages, exactly
    as `BaselineReader` builds it, and the same target as the REAR groups."""
    from rearqa.reader.prompts import build_messages, get_prompt

    template = get_prompt(prompt)
    rows = train_rows(snapshot, splits, max_questions)
    examples = []
    for (split, row), target in zip(rows, question_targets(snapshot, rows, depth)):
        passages = snapshot.ranked(row, "dense", k)
        examples.append(ChatExample(row["id"], build_messages(row["question"], passages, template,
                                                              max_passage_words), target))
    return examples


def closed_book_examples(snapshot, splits: list[str], depth: int = 20,
                         max_questions: int | None = None,
                         prompt: str = "short") -> list[ChatExample]:
    """Closed-book fine-tuning examples: the chat prompt with no passages, the same targets."""
    from rearqa.reader.prompts import build_messages, get_prompt

    template = get_prompt(prompt)
    rows = train_rows(snapshot, splits, max_questions)
    return [ChatExample(row["id"], build_messages(row["question"], None, template, 0), target)
            for (split, row), target in zip(rows, question_targets(snapshot, rows, depth))]


def encode_chat_example(tokenizer, example: ChatExample,
                        max_answer_tokens: int | None = 15) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered chat prompt + answer + eos, and the label mask (answer + eos)."""
    prompt = tokenizer.apply_chat_template(example.messages, tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]  # template holds them
    answer = tokenizer(example.target, add_special_tokens=False,
                       split_special_tokens=True)["input_ids"][:max_answer_tokens]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to end the answer with")
    tail = answer + [tokenizer.eos_token_id]
    return prompt_ids + tail, [False] * len(prompt_ids) + [True] * len(tail)
