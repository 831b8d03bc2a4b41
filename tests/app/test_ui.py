"""The Gradio chat served on loopback and driven through its HTTP API (gradio_client)."""
import socket

import pytest

from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig
from rearqa.app.chat_answer import answer_footer
from rearqa.app.conversation import FOOTER_SEPARATOR
from rearqa.app.ui import citation_rows
from rearqa.types import Answer, Citation, Passage


def text_of(content) -> str:
    """Gradio 6 returns message content as a list of typed parts."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_citation_rows_keep_document_text_verbatim():
    passage = Passage("p", "<script>alert('x')</script> & <b>b</b>", title="T", score=0.51234)
    assert citation_rows([passage]) == [[1, "T", 0.5123, "", "", "", "", "<script>alert('x')</script> & <b>b</b>", "p"]]


def test_citation_rows_show_the_readers_judgment():
    cited = Citation(Passage("p", "text", title="T", score=0.5), relevance=2.5, judgment="relevant",
                     answer="Paris")
    assert citation_rows([cited]) == [[1, "T", 0.5, 2.5, "", "relevant", "Paris", "text", "p"]]
    calibrated = Citation(cited.passage, relevance=2.5, judgment="relevant", answer="Paris", probability=0.41234)
    assert citation_rows([calibrated]) == [[1, "T", 0.5, 2.5, 0.412, "relevant", "Paris", "text", "p"]]


def test_footer_says_where_the_answer_came_from():
    cited = Answer("q", "a", [Citation(Passage("p", "t", title="Doc"))], cited=[0])
    assert "[1] Doc" in answer_footer(cited)
    assert "own knowledge" in answer_footer(Answer("q", "a", [], from_own_knowledge=True))
    assert "withheld" in answer_footer(Answer("q", "", [], abstained=True))


@pytest.fixture(scope="module")
def served(scratch_home):
    from pathlib import Path

    from rearqa.app.ui import launch

    config = PipelineConfig(retriever=RetrieverConfig(collection="mini"),
                            reader=ReaderConfig(max_new_tokens=12), k=2)
    pipe = Pipeline(config, home=scratch_home)
    pipe.collection.add_paths([Path(__file__).parents[1] / "data" / "mini_corpus.jsonl"], progress=False)
    port = free_port()
    demo = launch(pipe, port=port, block=False)
    yield demo.local_url
    demo.close()


@pytest.mark.slow
def test_chat_answers_with_citations_over_http(served):
    from gradio_client import Client

    assert served.startswith("http://127.0.0.1:")
    client = Client(served, verbose=False)
    history, table, box = client.predict("Who wrote Hamlet?", [], 1, "dense", "rag", api_name="/respond")
    assert text_of(history[0]["content"]) == "Who wrote Hamlet?"
    reply = text_of(history[1]["content"])
    assert "shakespeare" in reply.lower() and "Sources: [1] Hamlet" in reply
    assert table["data"][0][1] == "Hamlet"


@pytest.mark.slow
def test_chat_shows_markup_in_documents_as_text(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    _, table, _ = client.predict("Which page talks about script tags and bold markup?", [], 1, "bm25",
                                 "rag", api_name="/respond")
    assert table["data"][0][7] == "This page talks about <script>alert('x')</script> tags and <b>bold</b> markup in web pages."


# -- conversation: what a follow-up retrieves with, what the reader is told ----------------------
def test_a_follow_up_is_retrieved_with_the_question_it_refers_to():
    from rearqa.app.conversation import retrieval_query

    first = "What is the largest planet?"
    assert retrieval_query([], "What is it made of?") == "What is it made of?"  # nothing to refer to
    assert retrieval_query([first], "What is it made of?") == f"{first} What is it made of?"
    assert retrieval_query([first], "And Saturn?") == f"{first} And Saturn?"  # two words
    assert retrieval_query([first], "Who wrote Hamlet?") == "Who wrote Hamlet?"  # stands alone


def test_chained_follow_ups_keep_the_latest_standalone_question():
    from rearqa.app.conversation import anchor_question, is_follow_up, retrieval_query

    asked = ["Who wrote Hamlet?", "When did he write it?", "Which mountain is the highest on Earth?",
             "How tall is it?"]
    assert [is_follow_up(q) for q in asked] == [False, True, False, True]
    assert anchor_question(asked) == "Which mountain is the highest on Earth?"
    assert anchor_question(["Why?", "How?"]) == "Why?"  # the first question always anchors
    assert retrieval_query(asked, "Is it in Nepal?") == \
        "Which mountain is the highest on Earth? Is it in Nepal?"
    # Whole words only: "itinerary" and "these" in "theses" are not referring words.
    assert not is_follow_up("Which itinerary covers the theses of Luther?")


def test_reader_history_is_the_last_turns_without_the_ui_footer():
    from rearqa.app.conversation import reader_history, user_questions

    cited = Answer("Who wrote Hamlet?", "Shakespeare", [Citation(Passage("h", "t", title="Hamlet"))],
                   cited=[0])
    chat = [{"role": "user", "content": "Who painted the Mona Lisa?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Leonardo" + answer_footer(
                Answer("Who painted the Mona Lisa?", "Leonardo"))}]},  # Gradio 6 content parts
            {"role": "user", "content": "Who wrote Hamlet?"},
            {"role": "assistant", "content": "Shakespeare" + answer_footer(cited)},
            {"role": "user", "content": "Where was he born?"}]  # not answered yet: left out
    assert reader_history(chat, max_turns=1) == [
        {"role": "user", "content": "Who wrote Hamlet?"}, {"role": "assistant", "content": "Shakespeare"}]
    assert [m["content"] for m in reader_history(chat)] == [
        "Who painted the Mona Lisa?", "Leonardo", "Who wrote Hamlet?", "Shakespeare"]
    assert reader_history(chat, max_turns=0) == []
    assert user_questions(chat)[-1] == "Where was he born?"


# -- citation view: escaping and relevance bars ----------------------------------------------------
def test_citation_view_escapes_every_document_value():
    from rearqa.app.ui import citations_html

    evil = "<script>alert(1)</script><b>x</b>"
    cited = Citation(Passage('"><img src=x onerror=alert(1)>', f"note {evil} & more", title=evil,
                             score=0.5), relevance=1.0, judgment="<i>relevant</i>", answer=evil)
    page = citations_html(citation_rows([cited]))
    for tag in ("<script", "<b>", "<img", "<i>"):
        assert tag not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in page
    assert "note &lt;script&gt;" in page and "&amp; more" in page
    assert 'data-passage-id="&quot;&gt;&lt;img' in page  # attribute values are quoted safely


def test_citation_view_without_passages_says_so():
    from rearqa.app.ui import citations_html

    assert "No passages" in citations_html([])


def test_relevance_bar_is_the_readers_probability_or_the_relative_retrieval_score():
    import math

    from rearqa.app.ui import relevance_bar

    assert relevance_bar(0.0, 0.3, 0.6)[0] == 0.5
    assert math.isclose(relevance_bar(2.0, 0.3, 0.6)[0], 1 / (1 + math.exp(-2.0)))
    assert relevance_bar(-1000.0, 0.3, 0.6)[0] == 0.0  # no overflow for a very low logit
    assert relevance_bar(1000.0, 0.3, 0.6)[0] == 1.0
    value, label = relevance_bar("", 0.3, 0.6)  # no reader judgment (rag): relative to the top
    assert value == 0.5 and "not judged" in label
    assert relevance_bar(None, -0.2, 0.6)[0] == 0.0  # negative cosine clips at 0
    assert relevance_bar(None, 0.4, 0.0)[0] == 0.0  # no positive top score: empty bar
    assert "uncalibrated" in relevance_bar(2.0, 0.3, 0.6)[1]
    value, label = relevance_bar(2.0, 0.3, 0.6, 0.25)  # a calibrated probability is what is shown
    assert value == 0.25 and "25%" in label and "calibrated" in label


def test_citation_view_bars_follow_the_rows():
    import re

    from rearqa.app.ui import citations_html

    rows = citation_rows([Passage("a", "t", score=0.8), Passage("b", "t", score=0.2)])
    values = [float(v) for v in re.findall(r'aria-valuenow="([0-9.]+)"', citations_html(rows))]
    assert values == [1.0, 0.25]


# -- settings --------------------------------------------------------------------------------------
def test_reader_methods_offered_are_those_whose_files_exist(tmp_path):
    from rearqa.app.ui import available_methods, method_problem
    from rearqa.reader.config import READER_METHODS

    missing = ReaderConfig(checkpoint=str(tmp_path / "none"))  # rag-ft's adapter ships (checkpoints/)
    assert available_methods(missing) == ["closed-book", "rag", "rag-ft"]
    no_adapter = ReaderConfig(checkpoint=str(tmp_path / "none"), adapter=str(tmp_path / "none"))
    assert available_methods(no_adapter) == ["closed-book", "rag"]
    assert "rear_config.json" in method_problem("rear", missing)
    (tmp_path / "rear").mkdir()
    (tmp_path / "rear" / "rear_config.json").write_text("{}")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    present = ReaderConfig(checkpoint=str(tmp_path / "rear"), adapter=str(tmp_path / "lora"))
    assert available_methods(present) == list(READER_METHODS)


def test_an_unregistered_engine_says_so_and_names_the_registered_ones():
    from rearqa.app.ui import ENGINE_CHOICES, engine_problem, settings_note
    from rearqa.reader.engines import ENGINES

    assert ENGINE_CHOICES == list(ENGINES) and {"hf", "vllm"} <= set(ENGINE_CHOICES)
    assert engine_problem("hf") is None
    assert "not available" in engine_problem("tpu") and "'hf'" in engine_problem("tpu")
    assert "engine tpu" in settings_note("rag", "tpu")
    assert "Routing applies to the rear method only" in settings_note("rag", "hf")


def test_readers_that_cannot_run_are_listed_in_one_note_not_warned_about(tmp_path):
    from rearqa.app.ui import settings_note, unavailable_readers, unavailable_readers_note

    config = ReaderConfig(checkpoint=str(tmp_path / "none"), adapter=str(tmp_path / "no-adapter"))
    unavailable = unavailable_readers(config)
    assert list(unavailable) == ["rear", "rag-ft", "closed-book-ft"]
    assert "rear_config.json" in unavailable["rear"]
    assert "adapter_config.json" in unavailable["rag-ft"]
    note = unavailable_readers_note(unavailable)
    assert note.count("\n- ") == 2 and note.startswith("- **rear**: ")
    assert "⚠️" not in settings_note("rag", "hf") and "rear" not in settings_note("rear", "hf")


@pytest.mark.slow
def test_chat_refuses_an_engine_that_is_not_installed_with_a_clear_message(served):
    from gradio_client import Client

    client = Client(served, verbose=False)  # the settings offer only the registered engines
    with pytest.raises(Exception, match=r"tpu is not in the list of choices: \['hf', 'vllm'\]"):
        client.predict("Who wrote Hamlet?", [], 1, "dense", "rag", "", "tpu", api_name="/respond")


@pytest.mark.slow
def test_chat_follow_up_over_http_searches_with_the_first_question(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    history, _, _ = client.predict("What is the largest planet?", [], 1, "dense", "rag",
                                   api_name="/respond")
    history, table, _ = client.predict("What is it made of?", history, 1, "dense", "rag",
                                       api_name="/respond")
    assert table["data"][0][1] == "Jupiter"
    reply = text_of(history[-1]["content"])
    assert "searched for “What is the largest planet? What is it made of?”" in reply


def test_build_ui_mounts_in_a_fastapi_app(tmp_path):
    """The HTTP API mounts the chat with gr.mount_gradio_app; building it opens no model or index."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from rearqa.app.ui import build_ui

    pipe = Pipeline(PipelineConfig(retriever=RetrieverConfig(collection="unused")), home=tmp_path)
    demo = build_ui(pipe)
    assert isinstance(demo, gr.Blocks) and pipe._collection is None and not pipe._readers
    app = gr.mount_gradio_app(FastAPI(), demo, path="/ui")
    with TestClient(app) as client:
        assert client.get("/ui/").status_code == 200
        names = [d.get("api_name") for d in client.get("/ui/config").json()["dependencies"]]
    assert "respond" in names and "add_documents" in names


class ScriptedPipeline:
    """Stands in for Pipeline.stream: records what it was asked, plays back a REAR-like answer."""

    def __init__(self, answer: Answer):
        self.config = PipelineConfig()
        self.answer = answer
        self.calls = []

    def stream(self, question, k=None, *, method=None, retriever=None, history=None, query=None):
        self.calls.append({"question": question, "query": query, "history": history, "k": k})
        yield "passages", [c.passage for c in self.answer.citations]
        for piece in self.answer.text.split(" "):
            yield "token", piece + " "
        yield "answer", self.answer


def run_respond(pipe, message, history):
    import copy

    from rearqa.app.ui import ChatHandlers

    # Gradio serialises each step before asking for the next; the handler reuses its list.
    return [copy.deepcopy(step) for step in ChatHandlers(pipe).respond(message, history, 2, "dense", "rag")]


def test_respond_streams_a_follow_up_with_its_query_history_and_judged_citations():
    judged = [Citation(Passage("j", "Jupiter is a gas giant.", title="Jupiter", score=0.5), 1.5,
                       "relevant", "gas"),
              Citation(Passage("h", "Hamlet is a play.", title="Hamlet", score=0.1), -2.0,
                       "irrelevant", "a play")]
    pipe = ScriptedPipeline(Answer("What is it made of?", "Mostly gas", judged, method="rear",
                                   cited=[0]))
    earlier = [{"role": "user", "content": "What is the largest planet?"},
               {"role": "assistant", "content": "Jupiter" + FOOTER_SEPARATOR + "_Sources: [1] Jupiter_"}]
    steps = run_respond(pipe, "What is it made of?", earlier)
    call = pipe.calls[0]
    assert call["query"] == "What is the largest planet? What is it made of?"
    assert call["question"] == "What is it made of?" and call["k"] == 2
    assert call["history"] == [{"role": "user", "content": "What is the largest planet?"},
                               {"role": "assistant", "content": "Jupiter"}]
    chat, rows, box = steps[-1]
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant"] and box == ""
    marker = '<sup class="citation-marker">[1]</sup>'  # routing chose row 1
    assert chat[-1]["content"].startswith("Mostly gas" + marker + FOOTER_SEPARATOR)
    assert "Sources: [1] Jupiter" in chat[-1]["content"]
    assert "Also read, not used for the answer: [2] Hamlet" in chat[-1]["content"]
    assert [r[3:7] for r in rows] == [[1.5, "", "relevant", "gas"], [-2.0, "", "irrelevant", "a play"]]
    partial = [s[0][-1]["content"] for s in steps[2:-1]]  # the streamed pieces, before the footer
    assert partial[0] == "Mostly " and all(FOOTER_SEPARATOR not in t for t in partial)


def test_respond_marks_withheld_and_own_knowledge_answers():
    withheld = ScriptedPipeline(Answer("q", "", [], method="rear", abstained=True))
    chat = run_respond(withheld, "Who won the 2031 Tour de France?", [])[-1][0]
    assert "Answer withheld" in chat[-1]["content"]
    assert chat[-1]["content"].startswith(r"\(no answer\)" + FOOTER_SEPARATOR)  # no marker
    own = ScriptedPipeline(Answer("q", "Paris", [], method="rear", from_own_knowledge=True))
    assert "own knowledge" in run_respond(own, "What is the capital of France?", [])[-1][0][-1]["content"]


def test_respond_refuses_an_empty_question_before_showing_anything():
    import gradio as gr

    with pytest.raises(gr.Error, match="question is empty"):
        run_respond(ScriptedPipeline(Answer("q", "a")), "   ", [])


def test_respond_shows_markup_and_links_in_answers_and_titles_as_text():
    copied = Citation(Passage("m", "t", title="<i>Notes</i> [see](http://evil.example)"))
    said = "It reads <b>x</b> & [click](javascript:alert(1)) more"
    pipe = ScriptedPipeline(Answer("q", said, [copied], cited=[0]))
    answer = run_respond(pipe, "What does the note read?", [])[-1][0][-1]["content"]
    assert answer.startswith(r"It reads &lt;b&gt;x&lt;/b&gt; &amp; \[click\]\(javascript\:alert\(1\)\) "
                             'more<sup class="citation-marker">[1]</sup>' + FOOTER_SEPARATOR)
    assert r"[1] &lt;i&gt;Notes&lt;/i&gt; \[see\]\(http\://evil\.example\)" in answer
    from rearqa.app.conversation import reader_history

    told = reader_history([{"role": "user", "content": "What does the note read?"},
                           {"role": "assistant", "content": answer}])
    assert told[-1]["content"] == said  # the reader gets its text back, markers and escapes gone


# -- citation markers through the real chat handler, real SmolLM2, the embedded corpus ------------
@pytest.fixture(scope="module")
def wiki_handlers(prepared_home):
    from rearqa.app.ui import ChatHandlers

    config = PipelineConfig(reader=ReaderConfig(max_new_tokens=16), k=3)  # the bundled wiki collection
    return ChatHandlers(Pipeline(config, home=prepared_home))


def final_step(handlers, question: str, method: str):
    steps = list(handlers.respond(question, [], 3, "dense", method))
    chat, rows, _ = steps[-1]
    return text_of(chat[-1]["content"]), rows


def markers_of(message: str) -> list[int]:
    import re

    return [int(n) for n in re.findall(r'<sup class="citation-marker">\[(\d+)\]</sup>', message)]


@pytest.mark.slow
def test_rag_markers_are_every_passage_shown_in_order(wiki_handlers, one_thread):
    message, rows = final_step(wiki_handlers, "Who wrote Hamlet?", "rag")
    assert len(rows) == 3 and markers_of(message) == [row[0] for row in rows] == [1, 2, 3]
    assert message.split(FOOTER_SEPARATOR)[0].endswith('<sup class="citation-marker">[3]</sup>')
    sources = ", ".join(f"[{row[0]}] {row[1]}" for row in rows)
    assert f"Sources: {sources}" in message


@pytest.mark.slow
def test_rear_marker_is_the_passage_its_routing_chose(wiki_handlers, one_thread):
    from rearqa.app.chat_answer import answer_of_message

    message, rows = final_step(wiki_handlers, "Who wrote Hamlet?", "rear")
    assert len(rows) == 3 and all(row[5] in ("relevant", "irrelevant") for row in rows)
    marked = markers_of(message)  # (the no-marker fallback is test_chat_answer's)
    assert len(marked) == 1, message  # one passage: the one routing chose
    chosen = rows[marked[0] - 1]
    assert chosen[5] == "relevant" and chosen[6] == answer_of_message(message)
    assert f"Sources: [{chosen[0]}] {chosen[1]}" in message
    others = [f"[{row[0]}] {row[1]}" for row in rows if row is not chosen]
    assert f"Also read, not used for the answer: {', '.join(others)}" in message


def test_the_upload_shows_its_jobs_progress_then_what_it_added(scratch_home, tmp_path, batch_gate):
    from rearqa.app.jobs import JOBS_FILE, IngestJobs, JobSettings
    from rearqa.app.chat_answer import md_text
    from rearqa.app.ui import ChatHandlers

    pipe = Pipeline(PipelineConfig(retriever=RetrieverConfig(collection="chat-upload")), home=scratch_home)
    jobs = IngestJobs(lambda: pipe.collection, pipe.collection_path / JOBS_FILE, JobSettings(batch_chunks=2))
    gate = jobs.write_lock = batch_gate(entries=1 + 1 + 1)  # the file, the plan, one batch of 2 passages
    path = tmp_path / "long_notes.txt"
    path.write_text("zqchatx " + " ".join(f"w{i}" for i in range(700)))  # 9 passages
    ticks = []
    steps = ChatHandlers(pipe, jobs).add_documents([str(path)], progress=lambda *a, **k: ticks.append((a, k)))
    shown = []
    try:
        for report, files in steps:
            shown.append(report)
            if "indexing, 2 of 9 passages (22%)" in report:  # the job waits at the gate now
                break
    finally:
        gate.release_all()
    *_, (final, files) = [*steps] or [(shown[-1], None)]
    name = md_text("long_notes.txt")  # as the report shows it (escaped Markdown)
    assert f"**{name}**: indexing, 2 of 9 passages (22%)" in shown[-1]
    assert ((2, 9),) in [a for a, _ in ticks] and any(k.get("unit") == "passages" for _, k in ticks)
    assert files is None and f"**{name}**: 1 added, 0 updated" in final and "9 passages added" in final
    assert "collection now holds 1 documents (9 passages)" in final
    assert pipe.collection.retriever("bm25").search("zqchatx", k=1)[0].source.endswith("uploads/long_notes.txt")
