"""REAR inputs: token ids, label mask and passage mask for one (passage, question) pair.

Plain format (REAR's own, passage before question):

    [bos] {passage}<BEGIN_QUERY>{question}<GENERATE_SCORE> [<RELEVANT>|<IRRELEVANT>] [answer eos]

Chat format (for instruction-tuned models): `{passage}<BEGIN_QUERY>{question}` is the user
message, and `<GENERATE_SCORE>` opens the assistant turn:

    <chat prefix>{passage}<BEGIN_QUERY>{question}<chat suffix + assistant header><GENERATE_SCORE> ...

Question-first (`question_first=True`, an alternative this project adds; REAR reads the passage
first): the question comes before the passage, so that under causal attention every passage token
is read knowing the question (a cross-encoder's order), at the same length:

    <frame><BEGIN_QUERY>{question}\n\n{passage}<frame><GENERATE_SCORE> ...

`<GENERATE_SCORE>` stays the LAST prompt token in both formats, because the served rank logit is
read from the next-token logits at the end of the prompt (vLLM gives nothing else without
patching). Putting it inside the user message would leave the template's assistant header after
it.

Text pieces are tokenized one by one with `split_special_tokens=True`, so a passage that happens
to contain the string "<GENERATE_SCORE>" or "<|im_end|>" cannot inject a control token.

LM loss (`label_mask`) covers the judgment token, the answer tokens and eos; a noise-resistant
example (an irrelevant passage with the gold answer still required) masks the judgment token, so
the model learns to answer despite `<IRRELEVANT>` without being taught which judgment to emit.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from rearqa.reader.rear.tokens import rear_token_ids

QUESTION_FIRST_SEPARATOR = "\n\n"  # between the question and the passage, question-first
_USER_SLOT = "\x00REAR_USER_MESSAGE\x00"  # placeholder split out of the rendered chat template


@dataclass
class RearInput:
    """One tokenized REAR example (lists of equal length)."""

    input_ids: list[int]
    label_mask: list[bool]  # True where the token carries LM loss (judgment? + answer + eos)
    passage_mask: list[bool]  # True on the passage tokens (pooled by the lowrank_attn head)
    score_position: int  # index of <GENERATE_SCORE>; input_ids[:score_position + 1] is the prompt

    @property
    def labels(self) -> list[int]:
        """input_ids with -100 wherever no LM loss applies (unshifted; lm_loss shifts)."""
        return [t if keep else -100 for t, keep in zip(self.input_ids, self.label_mask)]

    @property
    def prompt_ids(self) -> list[int]:
        return self.input_ids[: self.score_position + 1]


def _encode(tokenizer, text: str, limit: int | None) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids[:limit] if limit is not None else ids


def _leading_special_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts in front of a text by itself (e.g. Llama-2's <s>)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    cut = len(with_special) - len(without)
    if cut > 0 and with_special[cut:] == without:
        return with_special[:cut]
    return []


# tokenizer -> {(system, chat template, vocabulary size): frame}; weak, so it dies with the tokenizer.
_CHAT_FRAMES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _chat_frame(tokenizer, system: str | None) -> tuple[list[int], list[int]]:
    """Token ids of the chat template before and after the user message.

    Rendered once per tokenizer, system message, template and vocabulary (training builds one
    input per passage, all with the same frame); the lists returned are fresh copies.
    """
    key = (system, tokenizer.chat_template, len(tokenizer))
    frames = _CHAT_FRAMES.setdefault(tokenizer, {})
    if key in frames:
        before, after = frames[key]
        return list(before), list(after)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": _USER_SLOT}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if rendered.count(_USER_SLOT) != 1:
        raise ValueError("the tokenizer's chat template does not render the user message verbatim")
    before, after = rendered.split(_USER_SLOT)
    # The template text holds its own special tokens (<|im_start|> ...): parse them as such.
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    frames[key] = (tuple(encode(before)), tuple(encode(after)))
    return list(frames[key][0]), list(frames[key][1])


def build_rear_input(tokenizer, passage_text: str, question: str, judgment: str | None = None,
                     answer: str | None = None, *, use_chat_template: bool,
                     noise_resistant: bool = False, add_eos: bool = True,
                     system: str | None = None, max_passage_tokens: int | None = None,
                     max_question_tokens: int | None = None,
                     max_answer_tokens: int | None = None,
                     question_first: bool = False) -> RearInput:
    """Tokenize one REAR example; see the module docstring for the layout.

    judgment: None (a scoring prompt), "relevant" or "irrelevant".
    answer: appended after the judgment (requires one), followed by eos when `add_eos`; pass
        `add_eos=False` to score exactly the answer tokens (knowledge-consistency confidence).
    noise_resistant: the judgment token carries no LM loss (REAR's noise-resistant examples).
    system: system message of the chat format; None keeps the template's default.
    question_first: the question before the passage (see the module docstring).
    """
    ids = rear_token_ids(tokenizer)
    if answer is not None and judgment is None:
        raise ValueError("an answer follows a judgment token: pass judgment='relevant' or "
                         "'irrelevant' with the answer")
    passage = _encode(tokenizer, passage_text, max_passage_tokens)
    query = _encode(tokenizer, question, max_question_tokens)
    if use_chat_template:
        before, after = _chat_frame(tokenizer, system)
    else:
        before, after = _leading_special_ids(tokenizer), []
    if question_first:
        lead = before + [ids.begin_query] + query + _encode(tokenizer, QUESTION_FIRST_SEPARATOR, None)
        input_ids = lead + passage + after + [ids.generate_score]
    else:
        lead = before
        input_ids = before + passage + [ids.begin_query] + query + after + [ids.generate_score]
    passage_mask = [False] * len(lead) + [True] * len(passage)
    passage_mask += [False] * (len(input_ids) - len(passage_mask))
    label_mask = [False] * len(input_ids)
    score_position = len(input_ids) - 1
    if judgment is not None:
        input_ids.append(ids.judgment(judgment))
        label_mask.append(not noise_resistant)
        passage_mask.append(False)
    if answer is not None:
        tail = _encode(tokenizer, answer, max_answer_tokens)
        if add_eos:
            if tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has no eos token; pass add_eos=False")
            tail = tail + [tokenizer.eos_token_id]
        input_ids += tail
        label_mask += [True] * len(tail)
        passage_mask += [False] * len(tail)
    return RearInput(input_ids, label_mask, passage_mask, score_position)


def collate_rear_inputs(inputs: list[RearInput], pad_token_id: int,
                        padding_side: str = "left") -> dict[str, torch.Tensor]:
    """Pad a batch: input_ids, attention_mask, labels (-100 on pads), passage_mask, all (B, T)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}: choose 'left' or 'right'")
    if not inputs:
        raise ValueError("collate_rear_inputs needs at least one input")
    width = max(len(x.input_ids) for x in inputs)
    rows: dict[str, list[list]] = {"input_ids": [], "attention_mask": [], "labels": [],
                                   "passage_mask": []}
    for x in inputs:
        n = width - len(x.input_ids)
        fields = {"input_ids": (x.input_ids, pad_token_id), "attention_mask": ([1] * len(x.input_ids), 0),
                  "labels": (x.labels, -100), "passage_mask": (x.passage_mask, False)}
        for name, (values, pad) in fields.items():
            rows[name].append([pad] * n + list(values) if padding_side == "left"
                              else list(values) + [pad] * n)
    batch = {name: torch.tensor(values) for name, values in rows.items()}
    batch["passage_mask"] = batch["passage_mask"].bool()
    return batch

