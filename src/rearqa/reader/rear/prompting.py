"""REAR's scoring prompts for a whole batch, built the way training builds them.

`passage_text` is what a REAR prompt shows of a passage; training examples are built with the same
function, so the model reads at inference exactly what it was trained on. `PromptBuilder` lays out
`build_rear_input` prompts for a batch at once; `StopTable` says where a greedy answer row stops.
"""
from __future__ import annotations

import torch

from rearqa.reader.engines import eos_token_ids
from rearqa.reader.rear.inputs import QUESTION_FIRST_SEPARATOR, RearInput, build_rear_input
from rearqa.reader.rear.tokens import rear_token_ids
from rearqa.types import Passage

# Token cuts of the REAR prompt, after the word cut of `passage_text`: the same as training's
# (rearqa.training.config: max_passage_tokens, max_question_tokens), REAR's own 300-token budget.
MAX_PASSAGE_TOKENS = 200
MAX_QUESTION_TOKENS = 64


def passage_text(passage: Passage, max_words: int) -> str:
    """What a REAR prompt shows of a passage: title line, then the text cut to `max_words` words.

    Training examples must be built with this same function, so the model reads at inference
    exactly what it was trained on.
    """
    text = " ".join(passage.text.split()[:max_words])
    return f"{passage.title}\n{text}" if passage.title else text


class PromptBuilder:
    """`build_rear_input` scoring prompts for a whole batch at once.

    The layout is build_rear_input's own, `frame + passage + <BEGIN_QUERY> + question + frame +
    <GENERATE_SCORE>` (question-first: `frame + <BEGIN_QUERY> + question + separator + passage +
    frame + <GENERATE_SCORE>`), with the frame read off one build_rear_input call; what changes is the
    cost: every passage text of the batch is tokenized in one call and each question once, where
    build_rear_input re-renders the chat template and re-reads the vocabulary for every row (the
    largest CPU cost of a REAR batch on a GPU machine). Tests check the two agree row for row.
    """

    def __init__(self, tokenizer, use_chat_template: bool, question_first: bool = False) -> None:
        self.tokenizer = tokenizer
        self.question_first = question_first
        empty = build_rear_input(tokenizer, "", "", use_chat_template=use_chat_template,
                                 question_first=question_first)
        ids = empty.input_ids
        self.begin_query = rear_token_ids(tokenizer).begin_query
        cut = ids.index(self.begin_query)
        self.separator = self._encode([QUESTION_FIRST_SEPARATOR], None)[0] if question_first else []
        self.before, self.generate_score = ids[:cut], ids[-1]
        self.after = ids[cut + 1 + len(self.separator):-1]

    def _encode(self, texts: list[str], limit: int | None) -> list[list[int]]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [row[:limit] for row in ids]

    def build(self, passage_texts: list[str], questions: list[str], question_of_row: list[int]
              ) -> list[RearInput]:
        passages = self._encode(passage_texts, MAX_PASSAGE_TOKENS)
        queries = self._encode(questions, MAX_QUESTION_TOKENS)
        inputs = []
        for passage, qi in zip(passages, question_of_row):
            if self.question_first:
                lead = [*self.before, self.begin_query, *queries[qi], *self.separator]
                ids = [*lead, *passage, *self.after, self.generate_score]
            else:
                lead = self.before
                ids = [*lead, *passage, self.begin_query, *queries[qi], *self.after,
                       self.generate_score]
            passage_mask = [False] * len(lead) + [True] * len(passage)
            passage_mask += [False] * (len(ids) - len(passage_mask))
            inputs.append(RearInput(ids, [False] * len(ids), passage_mask, len(ids) - 1))
        return inputs


class StopTable:
    """Per-token facts for stopping a row: eos, or the end of its first non-empty line."""

    def __init__(self, tokenizer, lm, device: torch.device) -> None:
        rows = lm.get_output_embeddings().weight.shape[0]
        texts = tokenizer.batch_decode([[i] for i in range(min(rows, len(tokenizer)))])
        texts += [""] * (rows - len(texts))  # padded output rows no token maps to
        eos = eos_token_ids(tokenizer, getattr(getattr(lm, "generation_config", None),
                                               "eos_token_id", None))
        table = lambda values: torch.tensor(values, dtype=torch.bool, device=device)  # noqa: E731
        self.eos = table([i in eos for i in range(rows)])
        self.newline = table(["\n" in t for t in texts])
        self.ends_line = table(["\n" in t and t.split("\n")[0].strip() != "" for t in texts])
        self.text = table([t.strip() != "" for t in texts])

    def update(self, tokens: torch.Tensor, done: torch.Tensor, has_text: torch.Tensor):
        """(done, has_text) after each row emitted `tokens` (B,)."""
        stop = self.eos[tokens] | self.ends_line[tokens] | (self.newline[tokens] & has_text)
        return done | stop, has_text | self.text[tokens]
