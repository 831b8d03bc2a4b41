"""Answer normalisation and matching, as in SQuAD's evaluator and DPR's has_answer.

`normalize_answer` lower-cases, strips punctuation and the articles a/an/the and folds white
space. A passage "contains" an answer when the normalised answer's tokens occur as a contiguous
run of whole tokens in the normalised passage (so "1603" does not match "16030").
"""
from __future__ import annotations

import re
import string
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "´"}

_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"}
_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                 "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty",
                 "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
                 "billion", "trillion", "first", "second", "third", "fourth", "fifth", "sixth",
                 "seventh", "eighth", "ninth", "tenth", "half", "quarter", "bc", "ad", "bce",
                 "ce", "and", "of", "st", "nd", "rd", "th", "s"}
_NUMERIC_TOKEN = re.compile(r"^\d+(st|nd|rd|th|s)?$")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")  # strip accents
    text = text.lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def contains_answer(text: str, answers: list[str]) -> bool:
    """True when some normalised answer occurs as whole tokens in the normalised text."""
    haystack = f" {normalize_answer(text)} "
    for answer in answers:
        needle = normalize_answer(answer)
        if needle and f" {needle} " in haystack:
            return True
    return False


def is_numeric_answer(answer: str) -> bool:
    """The fixed rule for "numeric/date" answers.

    An answer is numeric/date when, after normalisation, it is non-empty and every token is a
    number (digits with an optional ordinal/plural suffix, e.g. 1603, 3rd, 1990s), a month name,
    or a number word (one..trillion, first..tenth, half, quarter, BC/AD, and the glue words
    "and", "of"). So "1603", "march 3 1990", "two million" and "the 1990s" are numeric/date;
    "world war ii" and "3 doors down" are not.
    """
    tokens = normalize_tokens(answer.replace(",", "").replace(".", " "))
    if not tokens:
        return False
    has_number = False
    for token in tokens:
        if _NUMERIC_TOKEN.match(token) or token in _MONTHS:
            has_number = True
        elif token in _NUMBER_WORDS:
            has_number = has_number or token not in {"and", "of", "st", "nd", "rd", "th", "s"}
        else:
            return False
    return has_number


def answer_type(answers: list[str]) -> str:
    """'numeric' when every gold answer is numeric/date (see `is_numeric_answer`), else 'other'."""
    return "numeric" if answers and all(is_numeric_answer(a) for a in answers) else "other"
