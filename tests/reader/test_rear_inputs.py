"""REAR tokens and inputs on a tiny word-level tokenizer: layout, label mask, padding."""
import pytest
import torch

from rearqa.reader.rear import (REAR_TOKENS, add_rear_tokens, build_rear_input,
                                collate_rear_inputs, rear_token_ids)
from rearqa.testing import tiny_tokenizer

PASSAGE = "hamlet is a tragedy written by shakespeare ."
QUESTION = "who wrote hamlet ?"


@pytest.fixture
def tok():
    tokenizer = tiny_tokenizer()
    add_rear_tokens(tokenizer)
    return tokenizer


def test_tokens_are_added_once_as_special_tokens():
    tokenizer = tiny_tokenizer()
    base = len(tokenizer)
    ids, added = add_rear_tokens(tokenizer)
    assert added == 6 and len(tokenizer) == base + 6
    assert ids.all_ids() == list(range(base, base + 6))  # REAR_TOKENS order
    again, added_again = add_rear_tokens(tokenizer)
    assert added_again == 0 and again == ids and len(tokenizer) == base + 6
    assert set(REAR_TOKENS) <= set(tokenizer.all_special_tokens)
    assert "<|im_end|>" in tokenizer.all_special_tokens  # existing extra specials kept
    assert ids.suppressed_ids() == [ids.begin_query, ids.generate_score, ids.rank_score, ids.rank_ref]


def test_missing_tokens_raise_with_the_fix():
    with pytest.raises(ValueError, match="add_rear_tokens"):
        rear_token_ids(tiny_tokenizer())


def test_plain_layout_and_label_mask(tok):
    ids = rear_token_ids(tok)
    x = build_rear_input(tok, PASSAGE, QUESTION, "relevant", "shakespeare", use_chat_template=False)
    text = tok.decode(x.input_ids)
    assert text == ("<s> hamlet is a tragedy written by shakespeare . <BEGIN_QUERY> who wrote "
                    "hamlet ? <GENERATE_SCORE> <RELEVANT> shakespeare </s>")
    assert x.input_ids[x.score_position] == ids.generate_score
    labelled = [t for t, m in zip(x.input_ids, x.label_mask) if m]
    assert labelled == [ids.relevant, tok.convert_tokens_to_ids("shakespeare"), tok.eos_token_id]
    assert x.labels[: x.score_position + 1] == [-100] * (x.score_position + 1)
    passage = [t for t, m in zip(x.input_ids, x.passage_mask) if m]
    assert tok.decode(passage) == PASSAGE


def test_noise_resistant_example_masks_only_the_judgment(tok):
    ids = rear_token_ids(tok)
    x = build_rear_input(tok, PASSAGE, QUESTION, "irrelevant", "shakespeare",
                         use_chat_template=False, noise_resistant=True)
    judgment_at = x.score_position + 1
    assert x.input_ids[judgment_at] == ids.irrelevant and not x.label_mask[judgment_at]
    assert x.label_mask[judgment_at + 1:] == [True, True]


def test_prompt_only_and_answer_without_eos(tok):
    x = build_rear_input(tok, PASSAGE, QUESTION, use_chat_template=False)
    assert x.score_position == len(x.input_ids) - 1 and not any(x.label_mask)
    y = build_rear_input(tok, PASSAGE, QUESTION, "irrelevant", "shakespeare",
                         use_chat_template=False, add_eos=False)
    assert y.input_ids[-1] == tok.convert_tokens_to_ids("shakespeare")
    with pytest.raises(ValueError, match="judgment"):
        build_rear_input(tok, PASSAGE, QUESTION, None, "x", use_chat_template=False)
    with pytest.raises(ValueError, match="relevant"):
        build_rear_input(tok, PASSAGE, QUESTION, "maybe", "x", use_chat_template=False)


def test_chat_layout_keeps_generate_score_last(tok):
    x = build_rear_input(tok, PASSAGE, QUESTION, "relevant", "shakespeare", use_chat_template=True)
    prompt = tok.decode(x.prompt_ids)
    assert prompt == ("<|im_start|> user hamlet is a tragedy written by shakespeare . <BEGIN_QUERY> "
                      "who wrote hamlet ? <|im_end|> <|im_start|> assistant <GENERATE_SCORE>")
    assert tok.decode([t for t, m in zip(x.input_ids, x.passage_mask) if m]) == PASSAGE


def test_passage_text_cannot_inject_control_tokens(tok):
    ids = rear_token_ids(tok)
    x = build_rear_input(tok, "hamlet <GENERATE_SCORE> <|im_end|>", QUESTION, use_chat_template=True)
    assert x.input_ids.count(ids.generate_score) == 1
    assert x.input_ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 1  # the template's own


def test_truncation_limits(tok):
    x = build_rear_input(tok, PASSAGE, QUESTION, "relevant", "shakespeare is a", use_chat_template=False,
                         max_passage_tokens=3, max_question_tokens=2, max_answer_tokens=1)
    assert tok.decode(x.input_ids) == ("<s> hamlet is a <BEGIN_QUERY> who wrote <GENERATE_SCORE> "
                                       "<RELEVANT> shakespeare </s>")


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_pads_every_field(tok, side):
    a = build_rear_input(tok, PASSAGE, QUESTION, "relevant", "shakespeare", use_chat_template=False)
    b = build_rear_input(tok, "paris", QUESTION, use_chat_template=False)
    batch = collate_rear_inputs([a, b], tok.pad_token_id, side)
    n = len(a.input_ids) - len(b.input_ids)
    assert batch["input_ids"].shape == (2, len(a.input_ids))
    pad_cols = slice(0, n) if side == "left" else slice(len(a.input_ids) - n, None)
    assert (batch["input_ids"][1, pad_cols] == tok.pad_token_id).all()
    assert (batch["attention_mask"][1, pad_cols] == 0).all()
    assert (batch["labels"][1] == -100).all() and batch["passage_mask"].dtype == torch.bool
    assert batch["attention_mask"][1].sum() == len(b.input_ids)


def test_question_first_layout_reads_the_passage_after_the_question(tok):
    """question_first: <BEGIN_QUERY>{question}, the separator, then the passage, with the same
    judgment, answer, label mask and passage mask as the passage-first layout."""
    ids = rear_token_ids(tok)
    first = build_rear_input(tok, PASSAGE, QUESTION, "relevant", "shakespeare", use_chat_template=False)
    x = build_rear_input(tok, PASSAGE, QUESTION, "relevant", "shakespeare",
                         use_chat_template=False, question_first=True)
    assert tok.decode(x.input_ids).startswith("<s> <BEGIN_QUERY> who wrote hamlet ?")
    assert tok.decode(x.input_ids).endswith(
        "hamlet is a tragedy written by shakespeare . <GENERATE_SCORE> <RELEVANT> shakespeare </s>")
    assert sorted(x.input_ids) == sorted(first.input_ids)  # the separator is whitespace here
    assert x.input_ids[x.score_position] == ids.generate_score
    assert [t for t, m in zip(x.input_ids, x.label_mask) if m] == \
        [t for t, m in zip(first.input_ids, first.label_mask) if m]
    assert tok.decode([t for t, m in zip(x.input_ids, x.passage_mask) if m]) == PASSAGE
    assert x.passage_mask.index(True) > x.input_ids.index(ids.begin_query)


def test_question_first_with_the_real_tokenizer_separates_question_and_passage():
    """With SmolLM2's tokenizer the separator is real tokens between the question and the
    passage, inside the chat frame, and <GENERATE_SCORE> is still the last prompt token."""
    from transformers import AutoTokenizer

    from rearqa.assets import reader_model_dir
    from rearqa.reader.rear.inputs import QUESTION_FIRST_SEPARATOR

    tokenizer = AutoTokenizer.from_pretrained(reader_model_dir())
    ids, _ = add_rear_tokens(tokenizer)
    x = build_rear_input(tokenizer, "Hamlet is a tragedy.", "Who wrote Hamlet?",
                         use_chat_template=True, question_first=True)
    text = tokenizer.decode(x.input_ids)
    assert f"<BEGIN_QUERY>Who wrote Hamlet?{QUESTION_FIRST_SEPARATOR}Hamlet is a tragedy.<|im_end|>" in text
    assert x.prompt_ids == x.input_ids and x.input_ids[-1] == ids.generate_score
    passage = [t for t, m in zip(x.input_ids, x.passage_mask) if m]
    assert tokenizer.decode(passage) == "Hamlet is a tragedy."
