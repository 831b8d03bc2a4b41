"""The Gradio chat served on loopback and driven through its HTTP API (gradio_client)."""
import socket

import pytest

from rearqa.config import PipelineConfig
from rearqa.pipeline import Pipeline
from rearqa.reader.config import ReaderConfig
from rearqa.retriever.config import RetrieverConfig
from rearqa.app.ui import answer_footer, citation_rows
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
    assert citation_rows([passage]) == [[1, "T", 0.5123, "", "", "", "<script>alert('x')</script> & <b>b</b>", "p"]]


def test_citation_rows_show_the_readers_judgment():
    cited = Citation(Passage("p", "text", title="T", score=0.5), relevance=2.5, judgment="relevant",
                     answer="Paris")
    assert citation_rows([cited]) == [[1, "T", 0.5, 2.5, "relevant", "Paris", "text", "p"]]


def test_footer_says_where_the_answer_came_from():
    cited = Answer("q", "a", [Citation(Passage("p", "t", title="Doc"))])
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
    assert table["data"][0][6] == "This page talks about <script>alert('x')</script> tags and <b>bold</b> markup in web pages."
