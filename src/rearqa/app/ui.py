"""The Gradio chat: streamed answers with their citations, titles and retrieval scores.

Passage text goes into a table of plain strings, so a document holding HTML or script shows it
literally. The server binds to 127.0.0.1 unless told otherwise and never opens a share tunnel.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from rearqa.reader import QuestionError  # noqa: E402
from rearqa.types import Answer, Citation, Passage  # noqa: E402

CITATION_HEADERS = ["#", "title", "retrieval score", "relevance", "judgment", "passage answer",
                    "passage", "id"]
RETRIEVERS = ["dense", "bm25", "hybrid"]
METHODS = ["rag", "closed-book"]


def citation_rows(items: list[Passage] | list[Citation]) -> list[list]:
    """One table row per passage; the reader's judgment columns stay empty until it has one."""
    rows = []
    for i, item in enumerate(items, start=1):
        c = item if isinstance(item, Citation) else Citation(item)
        p = c.passage
        relevance = "" if c.relevance is None else round(c.relevance, 3)
        rows.append([i, p.title, round(p.score, 4), relevance, c.judgment or "", c.answer or "",
                     p.text, p.id])
    return rows


def answer_footer(answer: Answer) -> str:
    if answer.abstained:
        return "\n\n_No passage was judged relevant: the answer was withheld._"
    if answer.from_own_knowledge:
        return "\n\n_Answered from the model's own knowledge (no passages used)._"
    titles = ", ".join(f"[{i}] {c.passage.title or c.passage.id}"
                       for i, c in enumerate(answer.citations, start=1))
    return f"\n\n_Sources: {titles}_" if titles else ""


def build_ui(pipeline) -> gr.Blocks:
    """The chat UI over one pipeline (which loads its index and reader on first question)."""

    def respond(message: str, history: list[dict], k: int, retriever: str, method: str
                ) -> Iterator[tuple[list[dict], list[list], str]]:
        history = list(history or [])
        history.append({"role": "user", "content": message})
        history.append({"role": "assistant", "content": ""})
        rows: list[list] = []
        try:
            for kind, value in pipeline.stream(message, k=int(k), retriever=retriever, method=method):
                if kind == "passages":
                    rows = citation_rows(value)
                    yield history, rows, ""
                elif kind == "token":
                    history[-1]["content"] += value
                    yield history, rows, ""
                else:
                    history[-1]["content"] = (value.text or "(no answer)") + answer_footer(value)
                    yield history, citation_rows(value.citations) if value.citations else rows, ""
        except QuestionError as exc:
            history.pop()  # no assistant turn for a question that was refused
            history.pop()
            raise gr.Error(str(exc)) from exc

    with gr.Blocks(title="rearqa") as demo:
        gr.Markdown("## rearqa\nAsk a question; answers cite the passages they were given.")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
                box = gr.Textbox(label="Question", placeholder="Who wrote Hamlet?", elem_id="question")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("Clear")
            with gr.Column(scale=1):
                k = gr.Slider(1, 20, value=pipeline.config.k, step=1, label="k (passages)")
                retriever = gr.Dropdown(RETRIEVERS, value=pipeline.config.retriever.kind, label="Retriever")
                method = gr.Dropdown(METHODS, value=pipeline.config.reader.method, label="Reader method")
        citations = gr.Dataframe(headers=CITATION_HEADERS, label="Citations", wrap=True,
                                 interactive=False, elem_id="citations")
        inputs = [box, chatbot, k, retriever, method]
        outputs = [chatbot, citations, box]
        box.submit(respond, inputs, outputs)
        send.click(respond, inputs, outputs)
        clear.click(lambda: ([], [], ""), None, outputs)
    return demo


def launch(pipeline, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Serve the chat; with `block=False` return at once (`demo.local_url`, `demo.close()`)."""
    demo = build_ui(pipeline)
    demo.queue(default_concurrency_limit=1, max_size=64)  # one reader; bounded waiting line
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                show_error=True, footer_links=[])
    return demo
