"""The web chat in a real browser: Debian's chromium driven headless by Playwright.

One server (127.0.0.1, a free port) over the mini corpus with the real SmolLM2 reader, one page,
one conversation walked through in order: a question answered by streaming with its citations
and their markers, a follow-up that only makes sense with the first turn, an uploaded document
that the next answer cites, uploaded documents holding markup and Markdown links that must show
as text, and a REAR answer marked with the passage its routing chose. The server's config names
a LoRA adapter that does not exist, so the settings must list rag-ft and closed-book-ft in their
collapsed note instead of warning about them. Screenshots go to $REARQA_ARTIFACTS/browser,
default tests/artifacts/browser (git-ignored).

`make test` installs chromium first; run alone, the test installs it (as root, with apt-get) or
skips saying why it could not.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig

pytestmark = pytest.mark.slow

MINI_CORPUS = Path(__file__).parents[1] / "data" / "mini_corpus.jsonl"
# Chromium's own background traffic would flood the closed network (shared/ASSETS.md).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A follow-up that names nothing: alone it retrieves another passage of the mini corpus first.
FIRST_QUESTION, FOLLOW_UP, TOPIC = "What is the largest planet?", "What is it made of?", "Jupiter"
FACT = "The Zorblatt lantern festival is held every spring in the mountain town of Quillmere."
MARKUP = "<script>alert(1)</script><b>x</b>"
LINK = "[click here](http://evil.example/x)"  # Markdown link syntax in a title and a text
TIMEOUT_MS = 90_000


def chromium_path() -> str:
    """Debian's chromium, installed here if missing and possible (Playwright's download fails)."""
    path = shutil.which("chromium")
    if path:
        return path
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        done = subprocess.run("apt-get update && apt-get install -y chromium", shell=True,
                              capture_output=True, text=True, timeout=900)
        if shutil.which("chromium"):
            return shutil.which("chromium")
        pytest.skip("chromium is absent and `apt-get install -y chromium` failed "
                    f"(exit {done.returncode}): {done.stderr[-500:]}")
    pytest.skip("chromium is absent and cannot be installed here (needs root and apt-get): "
                "run `apt-get install -y chromium` (make test does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    root = Path(os.environ.get("REARQA_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def mini_pipeline(scratch_home):
    # 20 new tokens: long enough for the page to show partial answers while they stream. The
    # adapter directory does not exist: rag-ft and closed-book-ft cannot run.
    reader = ReaderConfig(max_new_tokens=20, adapter=str(scratch_home / "no-such-adapter"))
    config = PipelineConfig(retriever=RetrieverConfig(collection="mini"), reader=reader, k=2)
    pipe = Pipeline(config, home=scratch_home)
    pipe.collection.add_paths([MINI_CORPUS], progress=False)
    return pipe


@pytest.fixture(scope="module")
def server(mini_pipeline):
    from rearqa.app.ui import launch

    demo = launch(mini_pipeline, port=free_port(), block=False)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable,
            headless=True, args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.dialogs = []  # alert() calls: a document's script must never run
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(server)
        page.locator("#question textarea").wait_for(timeout=TIMEOUT_MS)
        yield page
        context.close()


# -- page helpers ---------------------------------------------------------------------------------
RECORD_BOT_TEXTS = """() => {
    window.botTexts = [];
    const chat = document.querySelector('#chat');
    new MutationObserver(() => {
        const bots = chat.querySelectorAll('[data-testid="bot"]');
        if (bots.length) window.botTexts.push(bots[bots.length - 1].innerText);
    }).observe(chat, {childList: true, subtree: true, characterData: true});
}"""


def ask(page, question: str, answers_before: int) -> str:
    """Type a question, wait for its finished answer (the footer closes it), return its text."""
    page.evaluate(RECORD_BOT_TEXTS)
    # Mark the citation view of the previous answer, so `citations` waits for a fresh one.
    page.evaluate("document.querySelector('#citation-view table')?.setAttribute('data-stale', '1')")
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    bot = page.locator('#chat [data-testid="bot"]').nth(answers_before)
    bot.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(
        """(n) => { const b = document.querySelectorAll('#chat [data-testid="bot"]');
                    return b.length > n && /Sources|own knowledge|withheld/.test(b[n].innerText); }""",
        arg=answers_before, timeout=TIMEOUT_MS)
    return bot.inner_text()


def citations(page, first_title: str) -> list[dict]:
    """The rows of a fresh citation view (rendered after the table) whose first is `first_title`."""
    fresh = "#citation-view table.citations:not([data-stale])"
    page.wait_for_function(
        """([sel, t]) => { const c = document.querySelector(sel + ' .citation-title');
                           return c && c.innerText === t; }""", arg=[fresh, first_title],
        timeout=TIMEOUT_MS)
    return page.eval_on_selector_all(f"{fresh} tr.citation", """rows => rows.map(r => ({
        id: r.dataset.passageId,
        title: r.querySelector('.citation-title').innerText,
        text: r.querySelector('.citation-text').innerText,
        number: parseInt(r.querySelector('td').innerText),
        judgment: r.querySelectorAll('td')[3].innerText,
        bar: parseFloat(r.querySelector('[role=meter]').getAttribute('aria-valuenow')),
        markupElements: r.querySelectorAll('.citation-text *').length}))""")


def markers(page, answer: int) -> list[int]:
    """The citation markers shown after answer number `answer` (0-based), as numbers."""
    return page.eval_on_selector_all(
        "#chat [data-testid=\"bot\"]", """(bots, n) => Array.from(
            bots[n].querySelectorAll('sup.citation-marker'),
            s => parseInt(s.innerText.replace(/[^0-9]/g, '')))""", answer)


def choose_method(page, method: str) -> None:
    page.locator("#method input").click()
    page.get_by_role("option", name=method, exact=True).click()
    page.wait_for_function("(m) => document.querySelector('#method input').value === m",
                           arg=method, timeout=TIMEOUT_MS)


def upload(page, path: Path) -> str:
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator("#upload").get_by_text(path.stem).first.wait_for(timeout=TIMEOUT_MS)  # uploaded
    page.locator("#add-docs").click()
    # While indexing, the status shows the progress ("indexing <name>"); then the result.
    page.wait_for_function(
        """(name) => { const t = document.querySelector('#upload-status').innerText;
                       return t.includes(name + ':') && t.includes('collection now holds'); }""",
        arg=path.name, timeout=TIMEOUT_MS)
    return page.locator("#upload-status").inner_text()


# -- the conversation ---------------------------------------------------------------------------
def test_settings_list_the_readers_that_cannot_run_in_one_collapsed_note(page):
    assert "⚠" not in page.locator("#settings-note").inner_text()  # no warning for them
    readers = page.locator("#unavailable-readers")
    assert "Readers not offered here (2)" in readers.inner_text()
    note = page.locator("#unavailable-readers-note")
    assert not note.is_visible()  # collapsed until asked for
    readers.get_by_text("Readers not offered here").click()
    note.wait_for(state="visible", timeout=TIMEOUT_MS)
    listed = note.inner_text()
    assert "rag-ft" in listed and "closed-book-ft" in listed and "adapter_config.json" in listed
    assert "rear:" not in listed  # the REAR checkpoint is present
    page.locator("#method input").click()  # the dropdown offers only what can run
    offered = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert [o.replace("✓", "").strip() for o in offered] == ["closed-book", "rag", "rear"]


def test_chat_in_the_browser(page, mini_pipeline, artifacts, tmp_path):
    # 1. A question: the answer streams in (partial texts before the finished one) with citations;
    # rag read both passages, so the answer carries both markers, numbered as the rows below.
    reply = ask(page, "Who wrote Hamlet?", 0)
    page.screenshot(path=str(artifacts / "1-answer.png"), full_page=True)
    assert "Sources: [1] Hamlet" in reply
    streamed = page.evaluate("window.botTexts")
    partial = [t for t in streamed if t.strip() and "Sources" not in t]
    assert partial, f"no partial answer was shown before the finished one: {streamed}"
    rows = citations(page, "Hamlet")
    assert rows[0]["bar"] == 1.0 and 0 <= rows[1]["bar"] < 1.0  # bars: retrieval score vs the top
    assert markers(page, 0) == [row["number"] for row in rows] == [1, 2]
    assert reply.split("\n")[0].endswith("[1][2]")  # visible, right after the answer

    # 2. A follow-up only the first turn explains: alone it would retrieve another passage first.
    ask(page, FIRST_QUESTION, 1)
    citations(page, TOPIC)
    alone = mini_pipeline.retrieve(FOLLOW_UP, 2)[0].title
    assert alone != TOPIC, f"the follow-up alone retrieves {TOPIC!r}: it proves nothing"
    reply = ask(page, FOLLOW_UP, 2)
    page.screenshot(path=str(artifacts / "2-follow-up.png"), full_page=True)
    assert f"searched for “{FIRST_QUESTION} {FOLLOW_UP}”" in reply
    assert citations(page, TOPIC)[0]["title"] == TOPIC

    # 3. An uploaded document with a fact nobody else holds is what the next answer cites.
    fact_file = tmp_path / "zorblatt_festival.txt"
    fact_file.write_text(FACT + "\n")
    status = upload(page, fact_file)
    assert "1 added" in status, status
    page.screenshot(path=str(artifacts / "3-uploaded.png"), full_page=True)
    reply = ask(page, "Where is the Zorblatt lantern festival held?", 3)
    rows = citations(page, "zorblatt_festival")
    page.screenshot(path=str(artifacts / "4-upload-answer.png"), full_page=True)
    assert rows[0]["text"] == FACT and "Sources: [1] zorblatt_festival" in reply

    # 4. A document holding markup shows it as text: no element made, no script run.
    markup_file = tmp_path / "vexmoor_ledger.txt"
    markup_file.write_text(f"The Vexmoor ledger note reads {MARKUP} in the margin.\n")
    assert "1 added" in upload(page, markup_file)
    ask(page, "What does the Vexmoor ledger note read?", 4)
    rows = citations(page, "vexmoor_ledger")
    page.screenshot(path=str(artifacts / "5-markup.png"), full_page=True)
    assert MARKUP in rows[0]["text"] and rows[0]["markupElements"] == 0
    assert page.locator("#citation-view script").count() == 0
    assert page.dialogs == []

    # 5. A Markdown link in a title (the heading of an uploaded .md) and in its text: shown as
    # typed in the answer's note and the citation view, never made a link.
    link_file = tmp_path / "quorvane.md"
    link_file.write_text(f"# Quorvane index {LINK}\n\nThe Quorvane index lists {LINK} for "
                         "the harbour tides.\n")
    assert "1 added" in upload(page, link_file)
    reply = ask(page, "What does the Quorvane index list?", 5)
    rows = citations(page, f"Quorvane index {LINK}")
    page.screenshot(path=str(artifacts / "6-markdown-link.png"), full_page=True)
    assert f"[1] Quorvane index {LINK}" in reply and LINK in rows[0]["text"]
    assert page.locator("#chat a[href*='evil.example']").count() == 0
    assert page.locator("#citation-view a").count() == 0

    # 6. REAR judges both passages irrelevant for a question nothing in this corpus answers
    # (logits below its threshold) and answers from its own knowledge: no marker, and the note
    # says why.
    choose_method(page, "rear")
    reply = ask(page, "Who won the 1998 FIFA World Cup final?", 6)
    rows = citations(page, "Mona Lisa")
    page.screenshot(path=str(artifacts / "7-rear-fallback.png"), full_page=True)
    assert all(row["judgment"].startswith("irrelevant") for row in rows), rows
    assert markers(page, 6) == [] and "judged none of the 2 passages it read relevant" in reply

    # 7. REAR with a passage judged relevant: one marker, the row its routing chose.
    reply = ask(page, FIRST_QUESTION, 7)
    rows = citations(page, TOPIC)
    page.screenshot(path=str(artifacts / "8-rear-marker.png"), full_page=True)
    (marked,) = markers(page, 7)
    chosen = rows[marked - 1]
    assert chosen["judgment"].startswith("relevant"), rows
    assert reply.split("\n")[0].endswith(f"[{marked}]")
    assert f"Sources: [{marked}] {chosen['title']}" in reply
