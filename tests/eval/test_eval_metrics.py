"""Answer metrics on hand-computed cases."""
from __future__ import annotations

import pytest

from rearqa.eval.metrics import (METRICS, answer_contained, answer_length, answer_recall_at_k,
                                 exact_match, get_metric, score_predictions, token_f1)


@pytest.mark.parametrize("pred, answers, expected", [
    ("The Beatles!", ["beatles"], 1.0),  # article and punctuation dropped
    ("a  cat.", ["The cat"], 1.0),
    ("Beatles band", ["beatles"], 0.0),  # extra token: not exact
    ("Röntgen", ["Wilhelm Röntgen", "Rontgen"], 1.0),  # accents stripped; any answer counts
    ("", ["x"], 0.0),
])
def test_exact_match(pred, answers, expected):
    assert exact_match(pred, answers) == expected


def test_token_f1_partial_overlap():
    # pred tokens [quick, brown, fox] vs gold [quick, fox, jumps]: overlap 2, P = R = 2/3
    assert token_f1("the quick brown fox", ["quick fox jumps"]) == pytest.approx(2 / 3)
    # best of the answers: vs "paris" P = 1/2, R = 1 -> 2/3; vs "lyon" 0
    assert token_f1("Paris, France", ["Lyon", "Paris"]) == pytest.approx(2 / 3)
    # a repeated token matches only as often as the gold has it:
    # pred [new, new, york] vs gold [new, york]: overlap 2, P = 2/3, R = 1 -> 0.8
    assert token_f1("new new york", ["New York"]) == pytest.approx(0.8)
    assert token_f1("blue", ["red"]) == 0.0
    assert token_f1("", ["red"]) == 0.0
    assert token_f1("the", ["a"]) == 1.0  # both normalise to nothing (SQuAD v2 convention)


def test_answer_contained_needs_whole_words():
    assert answer_contained("He died in 1603.", ["1603"]) == 1.0
    assert answer_contained("It happened in 16030.", ["1603"]) == 0.0
    assert answer_contained("The answer is New York City, of course", ["new york city"]) == 1.0
    assert answer_contained("York", ["New York"]) == 0.0


def test_answer_length_counts_words_as_written():
    assert answer_length("Queen Elizabeth I  died.") == 4
    assert answer_length("") == 0


def test_answer_recall_at_k():
    passages = ["nothing here", "the year 1603 was long", "16030 is a number"]
    assert answer_recall_at_k(passages, ["1603"], (1, 2, 5)) == {1: 0.0, 2: 1.0, 5: 1.0}
    assert answer_recall_at_k(passages, ["1066"], (1, 3)) == {1: 0.0, 3: 0.0}
    assert answer_recall_at_k([], ["x"], (1,)) == {1: 0.0}
    with pytest.raises(ValueError, match="positive integer"):
        answer_recall_at_k(passages, ["1603"], (0,))


def test_registry_unknown_name_lists_valid_names():
    assert get_metric("em") is exact_match
    with pytest.raises(ValueError, match="unknown metric 'bleu'.*'contained'.*'em'.*'f1'"):
        get_metric("bleu")
    assert set(METRICS) >= {"em", "f1", "contained", "length"}


def test_score_predictions_returns_aggregate_and_per_example():
    aggregate, rows = score_predictions(["Paris", "in 1603", "no idea"],
                                        [["Paris"], ["1603"], ["London"]])
    assert rows[0] == {"em": 1.0, "f1": 1.0, "contained": 1.0, "length": 1.0}
    assert rows[1]["em"] == 0.0 and rows[1]["contained"] == 1.0
    assert rows[1]["f1"] == pytest.approx(2 / 3)
    assert aggregate["n"] == 3
    assert aggregate["em"] == pytest.approx(1 / 3)
    assert aggregate["contained"] == pytest.approx(2 / 3)
    assert aggregate["length"] == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="2 predictions but 1"):
        score_predictions(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="non-empty list"):
        exact_match("a", [])
