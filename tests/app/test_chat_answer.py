"""An answer as the chat shows it: citation markers, the note under it, escaping, and back."""
import re

import pytest

from rearqa.app.chat_answer import (FOOTER_SEPARATOR, answer_footer, answer_message,
                                    answer_of_message, citation_markers, md_text, plain_text)
from rearqa.app.ui import citation_rows
from rearqa.types import Answer, Citation, Passage

MARKER = re.compile(r'<sup class="citation-marker">\[(\d+)\]</sup>')


def passages(*titles: str) -> list[Passage]:
    return [Passage(t.lower(), f"{t} text", title=t) for t in titles]


def markers(message: str) -> list[int]:
    return [int(n) for n in MARKER.findall(message)]


def test_rag_cites_every_passage_it_was_given_in_order():
    given = passages("Hamlet", "Mona Lisa", "Paris")
    answer = Answer("Who wrote Hamlet?", "Shakespeare", [Citation(p) for p in given],
                    cited=[0, 1, 2])
    message = answer_message(answer)
    assert message.startswith("Shakespeare" + citation_markers(answer) + FOOTER_SEPARATOR)
    assert markers(message) == [1, 2, 3]
    # The markers are the numbers of the rows the citation view shows.
    assert [row[0] for row in citation_rows(answer.citations)] == markers(message)
    assert "Sources: [1] Hamlet, [2] Mona Lisa, [3] Paris" in message
    assert "not used" not in message


def test_rear_cites_the_passage_its_routing_chose_and_says_what_else_it_read():
    read = [Citation(p, relevance=r, judgment=j, answer=a) for p, r, j, a in zip(
        passages("Mona Lisa", "Hamlet"), (-3.0, 2.0), ("irrelevant", "relevant"),
        ("Leonardo", "Shakespeare"))]
    answer = Answer("Who wrote Hamlet?", "Shakespeare", read, method="rear", cited=[1])
    message = answer_message(answer)
    assert markers(message) == [2]
    row = citation_rows(answer.citations)[markers(message)[0] - 1]
    assert row[1] == "Hamlet" and row[6] == answer.text  # the marked row gave the answer
    assert "Sources: [2] Hamlet" in message
    assert "Also read, not used for the answer: [1] Mona Lisa" in message


def test_rear_closed_book_fallback_has_no_marker_and_says_why():
    read = [Citation(p, relevance=-4.0, judgment="irrelevant", answer="?")
            for p in passages("Mona Lisa", "Paris")]
    message = answer_message(Answer("q", "Shakespeare", read, method="rear",
                                    from_own_knowledge=True))
    assert markers(message) == [] and message.startswith("Shakespeare" + FOOTER_SEPARATOR)
    assert "own knowledge" in message and "judged none of the 2 passages it read relevant" in message
    assert "Sources" not in message


def test_withheld_and_closed_book_answers_have_no_markers():
    read = [Citation(p, relevance=-4.0, judgment="irrelevant") for p in passages("Paris")]
    withheld = answer_message(Answer("q", "", read, method="rear", abstained=True))
    assert markers(withheld) == [] and "Answer withheld" in withheld and "none of the 1" in withheld
    assert answer_of_message(withheld) == "(no answer)"
    closed = answer_message(Answer("q", "Paris", [], method="closed-book", from_own_knowledge=True))
    assert markers(closed) == [] and "no passages were given to this reader" in closed


def test_an_answer_that_cites_nothing_does_not_claim_its_passages():
    message = answer_message(Answer("q", "a", [Citation(p) for p in passages("Doc")]))
    assert markers(message) == [] and "Sources" not in message
    assert "Passages read (the answer cites none): [1] Doc" in message


def test_cited_must_name_a_citation():
    with pytest.raises(ValueError, match=r"positions \[1\] outside its 1 citations"):
        Answer("q", "a", [Citation(p) for p in passages("Doc")], cited=[0, 1])
    body = Answer("q", "a", [Citation(p) for p in passages("Doc")], cited=[0]).to_dict()
    assert body["cited"] == [0] and len(body["citations"]) == 1


# -- escaping: text from documents and the model shows as typed ------------------------------------
EVIL = "<script>alert(1)</script> [click](http://evil.example/x) ![i](x.png) **b** $$x$$ & `c`"


def test_markdown_and_html_in_answers_and_titles_are_escaped():
    shown = md_text(EVIL)
    for raw in ("<script", "[click]", "](http", "![i]", "**b**", "`c`", "$$", "http://", " & "):
        assert raw not in shown, raw
    cited = [Citation(Passage("e", EVIL, title=EVIL))]
    message = answer_message(Answer("q", EVIL, cited, cited=[0]), query=EVIL)
    for raw in ("<script", "[click]", "](http", "**b**", "http://"):
        assert raw not in message, raw
    assert markers(message) == [1]  # the only raw markup: the chat's own marker


@pytest.mark.parametrize("text", [EVIL, r"a \ b \\ \[1\] c", "1. item\n# heading\n===", "", "plain"])
def test_plain_text_undoes_md_text(text):
    assert plain_text(md_text(text)) == text


def test_answer_of_message_is_what_the_reader_said():
    cited = [Citation(p) for p in passages("Hamlet", "Paris")]
    answer = Answer("q", "It is [1] <b>x</b> & more", cited, cited=[0, 1])
    assert answer_of_message(answer_message(answer, query="other")) == answer.text


def test_footer_shows_the_query_a_follow_up_searched_with():
    answer = Answer("What is it made of?", "gas", [Citation(Passage("j", "t", title="Jupiter"))],
                    cited=[0])
    footer = answer_footer(answer, "What is the largest planet? What is it made of?")
    assert "searched for “What is the largest planet? What is it made of?”" in footer
    assert "searched for" not in answer_footer(answer, "What is it made of?")
