"""An answer as the chat shows it, and the plain answer read back from a chat message.

A finished answer becomes one Markdown message:

    {answer text, escaped}{citation markers}{FOOTER_SEPARATOR}{where it came from}

- The text is escaped for Markdown and HTML (`md_text`): the model may copy markup or a link
  (`[click](http://...)`) from a passage, and a title is document text too; both show as typed.
- The markers follow the answer (the reader writes one short line, so "after the answer" is
  after its only sentence): `[i]` for each passage in `Answer.cited`, numbered as the citation
  view numbers its rows (position + 1). RAG cites every passage it was given, in order; REAR
  the one its routing chose; an answer from the model's own knowledge, or withheld, has none.
  A marker is `<sup class="citation-marker">[i]</sup>`: escaped text never holds a raw `<`, so
  a marker cannot be confused with answer text, and `answer_of_message` can remove it exactly.
- The footer names the cited passages, says what else the reader read without using, and why an
  answer without sources has none (closed-book method, REAR judged nothing relevant, withheld).

`answer_of_message` undoes all of it, so the reader is told its earlier answers as it gave them.
"""
from __future__ import annotations

import html
import re

from rearqa.types import Answer

FOOTER_SEPARATOR = "\n\n---\n"  # the chat puts its sources / own-knowledge note after this
MARKER_CLASS = "citation-marker"

# ASCII punctuation Markdown (CommonMark, GFM) gives a meaning to; `&`, `<` and `>` become HTML
# entities instead. `:` and `.` are escaped too, so a URL in the text is not made a link.
_PUNCTUATION = r"[\\`*_{}\[\]()#+\-.!|~:$=]"
_MARKDOWN_PUNCTUATION = re.compile(f"({_PUNCTUATION})")
_ESCAPED_PUNCTUATION = re.compile(rf"\\({_PUNCTUATION})")
_MARKERS = re.compile(rf'(?:<sup class="{MARKER_CLASS}">\[\d+\]</sup>)+$')


def md_text(text: str) -> str:
    """`text` for a Markdown message, shown as typed: no markup, no link, no HTML."""
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", text), quote=False)


def plain_text(shown: str) -> str:
    """The text `md_text` was given (its inverse)."""
    return _ESCAPED_PUNCTUATION.sub(r"\1", html.unescape(shown))


def citation_markers(answer: Answer) -> str:
    """The markers of the passages the answer cites, e.g. `[1][2]` as superscripts."""
    return "".join(f'<sup class="{MARKER_CLASS}">[{i + 1}]</sup>' for i in answer.cited)


def _source(number: int, answer: Answer) -> str:
    passage = answer.citations[number - 1].passage
    return f"[{number}] {md_text(passage.title or passage.id)}"


def _sources_note(answer: Answer) -> str:
    """The cited passages, and those the reader read but the answer does not rest on."""
    cited = [i + 1 for i in answer.cited]
    unused = [n for n in range(1, len(answer.citations) + 1) if n not in cited]
    parts = [f"_Sources: {', '.join(_source(n, answer) for n in cited)}_"] if cited else []
    if unused and cited:
        parts.append(f"_Also read, not used for the answer: "
                     f"{', '.join(_source(n, answer) for n in unused)}_")
    elif unused:
        parts.append(f"_Passages read (the answer cites none): "
                     f"{', '.join(_source(n, answer) for n in unused)}_")
    return "\n\n".join(parts)


def _no_sources_note(answer: Answer) -> str:
    """Why an answer has no sources: withheld, or from the model's own knowledge."""
    read = len(answer.citations)
    if answer.abstained:
        return (f"⚠️ **Answer withheld**: the reader judged none of the {read} passages it read "
                "relevant, so it withheld the answer.")
    if read:
        return (f"ℹ️ **From the model's own knowledge**: the reader judged none of the {read} "
                "passages it read relevant, so it answered without them.")
    return "ℹ️ **From the model's own knowledge**: no passages were given to this reader."


def answer_footer(answer: Answer, query: str | None = None) -> str:
    """Where the answer came from, after FOOTER_SEPARATOR ("" when there is nothing to say)."""
    if answer.abstained or answer.from_own_knowledge:
        note = _no_sources_note(answer)
    else:
        note = _sources_note(answer)
    if query and query != answer.question:
        note += f"\n\n_Follow-up: searched for “{md_text(query)}”_"
    return f"{FOOTER_SEPARATOR}{note}" if note else ""


def answer_message(answer: Answer, query: str | None = None) -> str:
    """The chat message of a finished answer: text, citation markers, footer."""
    return md_text(answer.text or "(no answer)") + citation_markers(answer) \
        + answer_footer(answer, query)


def answer_of_message(shown: str) -> str:
    """The answer text of a chat message as the reader wrote it: without the footer, the
    markers and the escaping."""
    body = shown.split(FOOTER_SEPARATOR, 1)[0].strip()
    return plain_text(_MARKERS.sub("", body)).strip()
