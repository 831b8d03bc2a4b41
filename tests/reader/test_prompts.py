import pytest

from rearqa.reader import QuestionError, check_question
from rearqa.reader.prompts import PROMPTS, build_messages, format_passages, get_prompt
from rearqa.types import Passage


def test_rag_prompt_numbers_passages_and_cuts_them_to_the_word_budget():
    passages = [Passage("a", "one two three four five", title="First"), Passage("b", "six", title="")]
    text = format_passages(passages, max_words=3)
    assert text == "[1] First\none two three ...\n\n[2]\nsix"


def test_closed_book_prompt_has_no_passages():
    template = get_prompt("short")
    messages = build_messages("Who?", [], template, 100)
    assert [m["role"] for m in messages] == ["user"]
    assert "[1]" not in messages[0]["content"] and "Who?" in messages[0]["content"]


def test_history_goes_between_system_and_question():
    history = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    messages = build_messages("q2", [Passage("x", "text")], get_prompt("chat"), 100, history)
    assert [m["content"] for m in messages[1:3]] == ["q1", "a1"]  # after the system message
    assert "q2" in messages[-1]["content"] and "text" in messages[-1]["content"]


def test_unknown_prompt_lists_valid_names():
    with pytest.raises(ValueError, match=str(sorted(PROMPTS))[1:-1].replace("[", r"\[")):
        get_prompt("nope")


@pytest.mark.parametrize("bad, match", [("", "empty"), ("   \n", "empty"), (None, "must be text"),
                                         ("x" * 2001, "2001 characters long; the limit is 2000"),
                                         ("who \ud800?", "not valid Unicode at position 4")])
def test_bad_questions_are_refused_clearly(bad, match):
    with pytest.raises(QuestionError, match=match):
        check_question(bad, 2000)


def test_question_is_stripped():
    assert check_question("  Who wrote Hamlet? ", 100) == "Who wrote Hamlet?"


def test_best_last_puts_the_top_passage_next_to_the_question():
    passages = [Passage("a", "alpha", title="A"), Passage("b", "beta", title="B")]
    assert format_passages(passages, 10, best_last=True) == "[2] B\nbeta\n\n[1] A\nalpha"
    content = build_messages("q", passages, get_prompt("short-best-last"), 10)[-1]["content"]
    assert content.index("alpha") > content.index("beta")
