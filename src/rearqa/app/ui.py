"""The Gradio chat: multi-turn, streamed answers with their citations, relevance and judgments.

`build_ui(pipeline)` returns the `gr.Blocks` (the HTTP app mounts it; `launch` serves it alone
for `rearqa ui`). What it shows:
- the chat, streamed token by token; follow-ups are retrieved together with the question they
  refer to (the rule is in `rearqa.app.conversation`) and the reader gets the recent turns;
- citation markers after each answer, [i] for the passages it rests on (Answer.cited: for RAG
  every passage it was given, for REAR the one its routing chose), numbered as the citation
  view numbers its rows, and under the answer a note of where it came from: its sources, the
  model's own knowledge (Answer.from_own_knowledge) or a withheld answer (Answer.abstained),
  and why (rearqa.app.chat_answer writes the message; answer and titles show as typed);
- a citation view with a relevance bar per passage and the reader's judgment, rendered as HTML
  in which every piece of document text is escaped (a document holding `<script>` shows it
  literally), plus the same rows as a plain table;
- document upload into the collection: each file is an ingestion job (rearqa.app.jobs), and
  its progress (passages committed of total) shows while it runs;
- settings: k, retriever, reader method (only those whose model files are present; the others
  are listed, with what each needs, in one collapsed note), REAR routing, and the engine (hf,
  vllm; an engine that is not installed says so when chosen).

The server binds to 127.0.0.1 unless told otherwise and never opens a share tunnel.
"""
from __future__ import annotations

import dataclasses
import html
import os
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from rearqa.app.chat_answer import answer_message, md_text  # noqa: E402
from rearqa.app.conversation import reader_history, retrieval_query, user_questions  # noqa: E402
from rearqa.config_errors import ConfigError  # noqa: E402
from rearqa.reader import QuestionError, check_question  # noqa: E402
from rearqa.reader.config import (READER_METHODS, ReaderConfig, resolve_adapter,  # noqa: E402
                                  resolve_checkpoint)
from rearqa.reader.engines import ENGINES, get_engine_class  # noqa: E402
from rearqa.reader.rear.config import sigmoid  # noqa: E402
from rearqa.retriever.config import RETRIEVERS  # noqa: E402
from rearqa.retriever.loaders import LOADERS  # noqa: E402
from rearqa.types import Citation, Passage  # noqa: E402

CITATION_HEADERS = ["#", "title", "retrieval score", "relevance", "p(holds answer)", "judgment",
                    "passage answer", "passage", "id"]
# Engines offered in the settings: the registered ones (one whose package is missing says so).
ENGINE_CHOICES = list(ENGINES)
ROUTING_CHOICES = [("checkpoint default", ""), ("path reliability", "path_reliability"),
                   ("knowledge consistency", "knowledge_consistency")]
# What a method needs beyond the base model: each check raises ConfigError naming what is missing
# (resolve_adapter also refuses, on engine vllm, an adapter vLLM's LoRA loader cannot take).
METHOD_REQUIREMENTS = {"rear": resolve_checkpoint, "rag-ft": resolve_adapter,
                       "closed-book-ft": resolve_adapter}
UPLOAD_TYPES = sorted(LOADERS)  # the file suffixes the collection has loaders for
JOB_POLL_S = 0.5  # how often an upload's progress is read from its job


# -- settings ------------------------------------------------------------------------------------
def method_problem(method: str, config: ReaderConfig, engine: str = "") -> str | None:
    """Why `method` cannot run with `config` on `engine` ("" = config's): a missing checkpoint or
    adapter, or one that engine cannot serve (an adapter vLLM's LoRA loader refuses); or None."""
    check = METHOD_REQUIREMENTS.get(method)
    if check is None:
        return None
    try:
        check(dataclasses.replace(config, method=method, engine=engine or config.engine))
    except ConfigError as exc:
        return str(exc)
    return None


def available_methods(config: ReaderConfig) -> list[str]:
    """The reader methods of READER_METHODS whose files are present."""
    return [m for m in READER_METHODS if method_problem(m, config) is None]


def engine_problem(engine: str) -> str | None:
    """Why the reader engine `engine` cannot be used here, or None."""
    if engine not in ENGINES:
        return (f"The {engine!r} engine is not available in this installation: the registered "
                f"engines are {list(ENGINES)}. Choose one of those.")
    try:
        get_engine_class(engine)
    except ImportError as exc:
        return f"The {engine!r} engine is registered but cannot be imported: {exc}"
    return None


def settings_note(method: str, engine: str) -> str:
    """Markdown under the settings: a chosen engine that cannot run, what routing applies to.
    (Reader methods that cannot run are not offered; `unavailable_readers` says why.)"""
    lines = [f"⚠️ **engine {md_text(engine)}**: {md_text(problem)}"] \
        if (problem := engine_problem(engine)) else []
    if method != "rear":
        lines.append("Routing applies to the rear method only.")
    return "\n\n".join(lines)


def unavailable_readers(config: ReaderConfig) -> dict[str, str]:
    """The reader methods of READER_METHODS that cannot run with `config`, and why."""
    return {m: problem for m in READER_METHODS if (problem := method_problem(m, config))}


def unavailable_readers_note(unavailable: dict[str, str]) -> str:
    """The collapsed note's Markdown: one line per method that is not offered, with the reason."""
    return "\n".join(f"- **{md_text(m)}**: {md_text(why)}" for m, why in unavailable.items())


# -- citations -----------------------------------------------------------------------------------
def citation_rows(items: list[Passage] | list[Citation]) -> list[list]:
    """One table row per passage; the reader's judgment columns stay empty until it has one."""
    rows = []
    for i, item in enumerate(items, start=1):
        c = item if isinstance(item, Citation) else Citation(item)
        p = c.passage
        relevance = "" if c.relevance is None else round(c.relevance, 3)
        probability = "" if c.probability is None else round(c.probability, 3)
        rows.append([i, p.title, round(p.score, 4), relevance, probability, c.judgment or "",
                     c.answer or "", p.text, p.id])
    return rows


def relevance_bar(relevance: float | str | None, score: float, top_score: float,
                  probability: float | str | None = None) -> tuple[float, str]:
    """(bar fill in [0, 1], label) for one passage.

    With a calibrated probability (REAR's logit through the checkpoint's dev-select map) the bar
    is that probability. With only a relevance logit it is sigmoid(logit), labelled uncalibrated.
    Without either (rag) it is the retrieval score relative to the best in the list, clipped at 0,
    and the label says the reader did not judge it."""
    if probability not in (None, ""):
        value = min(1.0, max(0.0, float(probability)))
        return value, f"{value:.0%} likely to hold the answer (calibrated on dev-select)"
    if relevance not in (None, ""):
        value = sigmoid(float(relevance))
        return value, f"relevance {value:.2f} (uncalibrated; logit {float(relevance):+.2f})"
    value = min(1.0, max(0.0, score) / top_score) if top_score > 0 else 0.0
    return value, f"retrieval {score:.3f} ({value:.0%} of the top; not judged by this reader)"


_CELL = 'style="padding:4px 8px;vertical-align:top;border-top:1px solid #8884"'


def _bar_html(value: float, label: str) -> str:
    return (f'<div role="meter" aria-valuemin="0" aria-valuemax="1" aria-valuenow="{value:.3f}" '
            f'aria-label="{html.escape(label)}" class="relevance-bar" '
            'style="width:120px;height:10px;background:#8883;border-radius:5px;overflow:hidden">'
            f'<div style="width:{100 * value:.1f}%;height:100%;background:#2f7de1"></div></div>'
            f'<small>{html.escape(label)}</small>')


def citations_html(rows: list[list]) -> str:
    """The citation view: one HTML row per citation row (citation_rows), with a relevance bar.
    Every value taken from a document or the reader is escaped, so markup shows as text."""
    rows = [r for r in rows or [] if any(str(cell).strip() for cell in r)]  # the table's blank row
    if not rows:
        return '<p class="citations-empty">No passages for this answer.</p>'
    top = max((float(r[2]) for r in rows), default=0.0)
    head = "".join(f"<th {_CELL}>{h}</th>" for h in ("#", "source", "relevance", "judgment", "passage"))
    out = ['<table class="citations" style="border-collapse:collapse;width:100%">',
           f"<thead><tr>{head}</tr></thead><tbody>"]
    for number, title, score, relevance, probability, judgment, answer, text, pid in rows:
        value, label = relevance_bar(relevance, float(score), top, probability)
        said = f"<br><small>answer: {html.escape(str(answer))}</small>" if answer else ""
        out.append(
            f'<tr class="citation" data-passage-id="{html.escape(str(pid))}">'
            f"<td {_CELL}>{int(number)}</td>"
            f'<td {_CELL}><span class="citation-title">{html.escape(str(title))}</span>'
            f"<br><small>{html.escape(str(pid))}</small></td>"
            f"<td {_CELL}>{_bar_html(value, label)}</td>"
            f"<td {_CELL}>{html.escape(str(judgment or 'not judged'))}{said}</td>"
            f'<td {_CELL} class="citation-text">{html.escape(str(text))}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


READING_HTML = '<p class="citations-pending">Retrieving and reading…</p>'


# -- the app -------------------------------------------------------------------------------------
def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: shown as a message, not a traceback."""
    from rearqa.retriever import RetrieverError

    return QuestionError, ConfigError, RetrieverError


class ChatHandlers:
    """What the UI's events do, over one pipeline (which opens its index and reader lazily)."""

    def __init__(self, pipeline, jobs=None) -> None:
        self.pipeline = pipeline
        self.jobs = jobs  # rearqa.app.jobs.IngestJobs, made on first upload when not given
        self.base = pipeline.config.reader
        self.siblings: dict[tuple[str, str], object] = {}  # (engine, routing) -> pipeline

    def pipeline_for(self, method: str, routing: str, engine: str):
        """The pipeline with these reader settings; one per (engine, routing), sharing the
        collection. Routing only changes the rear reader, so other methods ignore it."""
        base = self.base
        if (problem := engine_problem(engine)) or (problem := method_problem(method, base, engine)):
            raise gr.Error(problem)
        routing = routing if method == "rear" else base.routing
        if (engine, routing) == (base.engine, base.routing):
            return self.pipeline
        if (engine, routing) not in self.siblings:
            self.siblings[(engine, routing)] = self.pipeline.with_reader(engine=engine, routing=routing)
        return self.siblings[(engine, routing)]

    def respond(self, message: str, history: list[dict], k: int, retriever: str, method: str,
                routing: str = "", engine: str = "") -> Iterator[tuple]:
        """Stream one answer into the chat: yields (chat messages, citation rows, question box)."""
        try:
            message = check_question(message, self.base.max_question_chars)
        except QuestionError as exc:
            raise gr.Error(str(exc)) from exc
        pipe = self.pipeline_for(method, routing or "", engine or self.base.engine)
        history = list(history or [])
        query = retrieval_query(user_questions(history), message)
        told = reader_history(history)
        history.append({"role": "user", "content": message})
        yield history, [], ""  # show the question, empty the previous answer's citations
        history.append({"role": "assistant", "content": ""})
        rows: list[list] = []
        try:
            for kind, value in pipe.stream(message, k=int(k), retriever=retriever, method=method,
                                           history=told, query=query):
                if kind == "passages":
                    rows = citation_rows(value)
                    yield history, rows, ""
                elif kind == "token":  # the model may copy markup from a passage: show it as text
                    history[-1]["content"] += md_text(value)
                    yield history, gr.skip(), ""
                else:
                    history[-1]["content"] = answer_message(value, query)
                    yield history, citation_rows(value.citations) if value.citations else rows, ""
        except user_errors() as exc:
            raise gr.Error(str(exc)) from exc

    def add_documents(self, files: list | None, progress=gr.Progress()) -> Iterator[tuple[str, object]]:
        """Add uploaded files to the collection, each as an ingestion job (rearqa.app.jobs, the
        API's runner when the chat is mounted on it): yields the report (Markdown) with each
        job's chunks done of total while it runs, and finally None to empty the file input."""
        if not files:
            raise gr.Error(f"Choose one or more files to add (supported: {' '.join(UPLOAD_TYPES)}).")
        paths = [Path(f if isinstance(f, str) else f.name) for f in files]
        jobs, lines = self.ingest_jobs(), []
        for i, path in enumerate(paths):
            job = self.submit(jobs, path)
            while job["state"] in ("queued", "running"):
                done, total = job["chunks_done"], job["chunks_total"]
                progress((done, total) if total else (i, len(paths)), desc=f"indexing {path.name}",
                         unit="passages" if total else "files")
                yield "\n".join([*lines, job_progress_line(job)]), gr.skip()
                time.sleep(JOB_POLL_S)
                job = jobs.get(job["id"])
            lines += job_report_lines(job)
        stats = self.pipeline.collection.stats()
        lines.append(f"\nThe collection now holds {stats['documents']} documents "
                     f"({stats['chunks']} passages).")
        yield "\n".join(lines), None

    def ingest_jobs(self):
        """The job runner: the one given (the API's), else one of this chat's own."""
        from rearqa.app.jobs import CHAT_JOBS_FILE, IngestJobs

        if self.jobs is None:
            # its own jobs file: opening one marks its active jobs interrupted, and a server may
            # be running on this collection with its own
            self.jobs = IngestJobs(lambda: self.pipeline.collection, self.pipeline.collection_path / CHAT_JOBS_FILE)
        return self.jobs

    @staticmethod
    def submit(jobs, path: Path) -> dict:
        from fastapi import HTTPException

        from rearqa.app.admission import QueueFull
        from rearqa.app.documents_api import upload_name

        try:
            return jobs.submit(upload_name(path.name), path.read_bytes())
        except HTTPException as exc:
            raise gr.Error(str(exc.detail)) from exc
        except QueueFull as exc:
            raise gr.Error(str(exc)) from exc


def job_progress_line(job: dict) -> str:
    """One file's line while its job is queued or running."""
    name = md_text(job["filename"])
    if job["chunks_total"] is None:
        return f"- **{name}**: {'waiting for the indexer' if job['state'] == 'queued' else 'reading the file'}…"
    done, total = job["chunks_done"], job["chunks_total"]
    share = f" ({100 * done // total}%)" if total else ""
    return f"- **{name}**: indexing, {done:,} of {total:,} passages{share}"


def job_report_lines(job: dict) -> list[str]:
    """One file's lines once its job has ended: what it added, and each error."""
    name, result = md_text(job["filename"]), job["result"]
    if job["state"] == "done":
        head = (f"- **{name}**: {result['added']} added, {result['updated']} updated, {result['unchanged']} "
                f"unchanged, {result['skipped_duplicates']} duplicates skipped ({result['chunks_added']} "
                f"passages added, {result['chunks_deleted']} deleted)")
    else:
        head = f"- **{name}**: {job['state']}, {job['chunks_done']:,} of {job['chunks_total'] or 0:,} passages added"
    return [head, *(f"  - ⚠️ {md_text(e)}" for e in job["errors"])]


def build_ui(pipeline, jobs=None) -> gr.Blocks:
    """The chat UI over one pipeline (which loads its index and reader on first question);
    `jobs`: the IngestJobs its uploads go to (default: its own, made on first upload)."""
    handlers = ChatHandlers(pipeline, jobs)
    base = pipeline.config.reader
    methods = available_methods(base)
    method_value = base.method if base.method in methods else methods[0]
    unavailable = unavailable_readers(base)
    with gr.Blocks(title="rearqa") as demo:
        gr.Markdown("## rearqa\nAsk a question, then follow up (\"when was it written?\"); "
                    "answers cite the passages they were given.")
        # Which backbone answers (a converted reader names its transform: docs/backbone.md).
        gr.Markdown(f"Reader backbone: {md_text(pipeline.backbone(method_value))}", elem_id="backbone")
        with gr.Row():
            with gr.Column(scale=3):
                # No LaTeX: "$$" copied from a passage must show as typed, like the rest.
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat", latex_delimiters=[])
                box = gr.Textbox(label="Question", placeholder="Who wrote Hamlet?", elem_id="question")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("New conversation", elem_id="clear")
                gr.Markdown("### Citations")
                view = gr.HTML(citations_html([]), elem_id="citation-view")
                with gr.Accordion("Citations as a table", open=False):
                    table = gr.Dataframe(headers=CITATION_HEADERS, label="Citations", wrap=True,
                                         type="array", interactive=False, elem_id="citations")
            with gr.Column(scale=1):
                with gr.Accordion("Settings", open=True):
                    k = gr.Slider(1, 20, value=pipeline.config.k, step=1, label="k (passages)")
                    retriever = gr.Dropdown(list(RETRIEVERS), value=pipeline.config.retriever.kind,
                                            label="Retriever")
                    method = gr.Dropdown(methods, value=method_value, label="Reader method",
                                         elem_id="method")
                    routing = gr.Dropdown(ROUTING_CHOICES, value=base.routing, label="Routing (rear)",
                                          elem_id="routing")
                    engine = gr.Dropdown(ENGINE_CHOICES, value=base.engine, label="Engine",
                                         elem_id="engine")
                    note = gr.Markdown(settings_note(method_value, base.engine),
                                       elem_id="settings-note")
                    with gr.Accordion(f"Readers not offered here ({len(unavailable)})", open=False,
                                      visible=bool(unavailable), elem_id="unavailable-readers"):
                        gr.Markdown(unavailable_readers_note(unavailable),
                                    elem_id="unavailable-readers-note")
                with gr.Accordion("Add documents", open=True):
                    files = gr.File(label="Documents", file_count="multiple", file_types=UPLOAD_TYPES,
                                    elem_id="upload")
                    add = gr.Button("Add to index", elem_id="add-docs")
                    added = gr.Markdown(elem_id="upload-status")
        inputs = [box, chatbot, k, retriever, method, routing, engine]
        outputs = [chatbot, table, box]
        # The view is rendered from the table once the answer is complete (REAR's judgments
        # only exist then); /respond itself keeps the (chat, table, box) outputs API clients use.
        for trigger, api in ((box.submit, {"api_name": "respond"}),
                             (send.click, {"api_visibility": "undocumented"})):
            trigger(lambda: READING_HTML, None, view, api_visibility="private") \
                .then(handlers.respond, inputs, outputs, concurrency_id="reader", **api) \
                .then(citations_html, table, view, api_visibility="private")
        clear.click(lambda: ([], [], "", citations_html([])), None, [*outputs, view],
                    api_visibility="private")
        for control in (method, engine):
            control.change(settings_note, [method, engine], note,
                           api_visibility="private")
        add.click(handlers.add_documents, files, [added, files], api_name="add_documents")
    return demo


def launch(pipeline, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> gr.Blocks:
    """Serve the chat; with `block=False` return at once (`demo.local_url`, `demo.close()`)."""
    demo = build_ui(pipeline)
    demo.queue(default_concurrency_limit=1, max_size=64)  # one reader; bounded waiting line
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                show_error=True, footer_links=[])
    return demo
