"""The HTTP API (`rearqa serve`): questions, streamed answers, documents, health, and an
OpenAI-compatible chat endpoint, over one `Pipeline`.

    POST /ask               question -> Answer JSON (the shape of `rearqa ask --json`)
    POST /ask/stream        server-sent events: passages, token..., answer (or error)
    POST /documents         multipart file upload -> ids and chunk count, once committed (201);
                            a large file -> 202 with an ingestion job, added in the background
    GET  /jobs/{id}         the job: state, chunks done of total, errors
    GET  /documents         a page of stored documents
    DELETE /documents/{id}  a document (or one chunk) by id       (these four: documents_api.py)
    GET  /health            ready | loading | error, model, collection size, queue
    POST /v1/chat/completions, GET /v1/models   OpenAI-compatible (openai_api.py)
    /docs, /openapi.json    the schema

The routes share one `ServerState` (state.py); this module composes them into the app. Reader
work runs in worker threads behind a bounded queue (admission.py), so the event loop stays free
and an overloaded server answers 429 at once instead of hanging. User errors (a bad
question, filter, file or method) are 4xx with the message that names them; anything else stays
a 500 with its traceback in the log. The app binds wherever uvicorn is told (`rearqa serve`
defaults to 127.0.0.1).
"""
# No `from __future__ import annotations`: the /ask body model is built per app (its question
# length limit is the pipeline's), and FastAPI needs the route annotations as real objects.
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from rearqa import assets
from rearqa.app.admission import QueueFull
from rearqa.app.documents_api import MULTIPART_SLACK, UploadLimit, documents_router
from rearqa.app.jobs import JobSettings
from rearqa.app.openai_api import openai_router
from rearqa.app.schemas import AnswerOut, HealthOut
from rearqa.app.state import EngineUnavailable, ServerConfig, ServerState, event_stream, unprocessable
from rearqa.config import PipelineConfig
from rearqa.config_errors import ConfigError
from rearqa.pipeline import Pipeline
from rearqa.reader import QuestionError
from rearqa.retriever import FilterError, QueryError

log = logging.getLogger(__name__)


# -- auth ---------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="rearqa serve --token / REARQA_API_TOKEN")


def token_check(token: str) -> Callable:
    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        given = credentials.credentials if credentials else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
    return check


# -- errors ----------------------------------------------------------------------------------------
def _user_error(loc: list[str]) -> Callable:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": unprocessable(loc, str(exc)).detail}, status_code=422)
    return handler


class _AsciiJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


ECHO_CHARS = 200  # of a rejected input echoed back in a 422
ECHO_ITEMS = 20  # of a rejected list or mapping


def _echo(value: Any) -> Any:
    """A rejected input as the 422 shows it: long text cut to ECHO_CHARS characters (with its
    length), long lists and mappings to ECHO_ITEMS, so a 100k-character question is not sent
    back whole."""
    if isinstance(value, str) and len(value) > ECHO_CHARS:
        return f"{value[:ECHO_CHARS]}... ({len(value)} characters)"
    if isinstance(value, list):
        return [_echo(v) for v in value[:ECHO_ITEMS]] + (["..."] if len(value) > ECHO_ITEMS else [])
    if isinstance(value, dict):
        return {k: _echo(v) for k, v in list(value.items())[:ECHO_ITEMS]}
    return value


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422, rendered as ASCII JSON: the echoed input may hold a lone surrogate
    (JSON allows "\\ud800") or an infinite number (1e999), which the default rendering turns
    into a 500; an input that cannot be written as JSON is left out of its error; a long one is
    cut (`_echo`)."""
    errors = [{**e, "input": _echo(e["input"])} if "input" in e else e
              for e in jsonable_encoder(exc.errors())]
    try:
        return _AsciiJSONResponse({"detail": errors}, status_code=422)
    except ValueError:
        return _AsciiJSONResponse({"detail": [{k: v for k, v in e.items() if k not in ("input", "ctx")}
                                              for e in errors]}, status_code=422)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
    # Connection: close, so a client that waits Retry-After does not come back on a keep-alive
    # connection the server has closed meanwhile (make reliability saw that ReadError).
    return JSONResponse({"detail": str(exc)}, status_code=429,
                        headers={"Retry-After": str(exc.retry_after), "Connection": "close"})


# Only errors a request can cause are mapped (to the field at fault); everything else stays a 500.
USER_ERRORS: dict[type[Exception], list[str]] = {QuestionError: ["body", "question"],
                                                 FilterError: ["body", "filters"], QueryError: ["body"]}


# -- the app ------------------------------------------------------------------------------------
def create_app(source, *, token: str | None = None, max_batch: int = 1, max_in_flight: int | None = None,
               max_queue: int = 8, max_upload_bytes: int = 20 * 1024 * 1024, warm: bool = True,
               jobs: JobSettings | None = None) -> FastAPI:
    """The API over `source`: a Pipeline, a PipelineConfig, or a function returning a Pipeline;
    `jobs`: when an upload becomes a background job (default JobSettings())."""

    pipeline = (Pipeline(source) if isinstance(source, PipelineConfig)
                else source() if callable(source) and not hasattr(source, "ask") else source)
    config = ServerConfig(token=token, max_batch=max_batch, max_in_flight=max_in_flight, max_queue=max_queue,
                          max_upload_bytes=max_upload_bytes, warm=warm, jobs=jobs or JobSettings())
    state = ServerState(pipeline, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn runs this on SIGTERM / Ctrl-C: stop vLLM's engine processes with the server
        # (left alone they outlived it, busy, in the load runs of docs/reliability.md).
        await run_in_threadpool(state.pipeline.close_readers)

    app = FastAPI(title="rearqa", version="0.1.0", lifespan=lifespan,
                  description="Relevance-aware retrieval-augmented question answering with citations.")
    app.state.rearqa = state
    for error, loc in USER_ERRORS.items():
        app.add_exception_handler(error, _user_error(loc))
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(EngineUnavailable, _unavailable)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes + MULTIPART_SLACK)
    guarded = [Depends(token_check(token))] if token is not None else []
    responses: dict[int | str, dict] = {
        400: {"description": "The body could not be parsed (not JSON, or not multipart for uploads)."},
        429: {"description": "The queue is full: retry after the Retry-After header's seconds."},
        503: {"description": "The collection or reader failed to load (see GET /health)."}}
    if token is not None:
        responses[401] = {"description": "Missing or wrong bearer token."}
    app.include_router(health_router(state))
    for router in (ask_router(state), documents_router(state), openai_router(state)):
        app.include_router(router, dependencies=guarded, responses=responses)
    return app


def model_name(pipeline) -> str:
    configured = pipeline.config.reader.model
    return Path(configured).name if configured else assets.reader_model_dir(pipeline.home).name


def health_router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    async def health() -> JSONResponse:
        """ready (200) once the collection and reader are loaded; loading or error (503) before."""
        pipe, queue = state.pipeline, state.queue
        status = "loading" if not state.ready.is_set() else "error" if state.error else "ready"
        counts, backbone = (None, None), ""
        if status == "ready":
            backbone = await run_in_threadpool(pipe.backbone)
            store = (await run_in_threadpool(lambda: pipe.collection)).docstore
            counts = await run_in_threadpool(lambda: (store.count_documents(), store.count_chunks()))
        body = HealthOut(status=status, model=model_name(pipe), method=pipe.config.reader.method,
                         backbone=backbone, collection=pipe.config.retriever.collection, documents=counts[0], chunks=counts[1],
                         queue={"in_flight": queue.in_flight, "waiting": queue.waiting,
                                "max_in_flight": queue.max_in_flight, "max_waiting": queue.max_waiting},
                         error=str(state.error) if state.error else None)
        return JSONResponse(body.model_dump(), status_code=200 if status == "ready" else 503)

    return router


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def ask_router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["ask"])
    AskRequest, _ = state.request_models

    @router.post("/ask", response_model=AnswerOut)
    async def ask(body: AskRequest) -> dict:  # type: ignore[valid-type]
        """Answer one question with its citations."""
        answer = await state.ask(body.question, body, body.method)
        return answer.to_dict()

    @router.post("/ask/stream", response_class=StreamingResponse,
                 responses={200: {"content": {"text/event-stream": {}},
                                  "description": "events: passages, token (repeated), answer; or error"}})
    async def ask_stream(body: AskRequest) -> StreamingResponse:  # type: ignore[valid-type]
        """The answer as server-sent events: `passages` (retrieved), `token` ({"text"}) pieces as
        they are generated, then `answer` (the POST /ask JSON; its text is authoritative)."""
        passages, ticket, events = await state.open_stream(body.question, body, body.method)

        async def body_events() -> AsyncIterator[bytes]:
            yield sse("passages", [p.to_dict() for p in passages])
            try:
                async for kind, value in state.events_after(events, ticket):
                    if kind == "answer":
                        yield sse("answer", value.to_dict())
                    elif value:  # the streamer also releases empty pieces
                        yield sse("token", {"text": value})
            except (*USER_ERRORS, EngineUnavailable) as exc:
                yield sse("error", {"detail": str(exc)})
            except Exception:
                yield sse("error", {"detail": "internal error; see the server log"})
                raise

        return event_stream(body_events(), ticket)

    return router


# -- the web chat ---------------------------------------------------------------------------------
def mount_ui(app: FastAPI, pipeline, path: str = "/chat") -> FastAPI:
    """Serve the Gradio chat of `rearqa.app.ui.build_ui(pipeline)` under `path`.

    The chat is not behind the API's bearer token (browsers send none), so it is refused when
    a token is set rather than left open beside a guarded API."""
    import gradio as gr

    from rearqa.app.ui import build_ui

    state = getattr(app.state, "rearqa", None)
    if state is not None and state.config.token is not None:
        raise ConfigError("the web chat cannot be mounted on a token-protected API: it would be open "
                          "to anyone; serve it separately with `rearqa ui`, or drop --token")
    jobs = state.jobs if state is not None else None  # the chat's uploads share the API's job runner
    app = gr.mount_gradio_app(app, build_ui(pipeline, jobs), path=path, footer_links=[])

    @app.get("/", include_in_schema=False)
    def _chat_home() -> RedirectResponse:  # the site's front page is the chat
        return RedirectResponse(path + "/")

    return app


KEEP_ALIVE_S = 75


def serve(pipeline, host: str = "127.0.0.1", port: int = 8000, chat: bool = False, **settings: Any) -> None:
    """Run the API with uvicorn until interrupted (`settings`: create_app's keywords)."""
    import uvicorn

    app = create_app(pipeline, **settings)
    if chat:
        mount_ui(app, app.state.rearqa.pipeline)
    log.info("rearqa API on http://%s:%d (docs at /docs)", host, port)
    # Keep idle connections longer than the Retry-After times the queue hands out (uvicorn: 5 s).
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_S)
