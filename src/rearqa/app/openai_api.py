"""OpenAI-compatible chat over the pipeline: POST /v1/chat/completions and GET /v1/models.

The last message is the question (it must be the user's); earlier user and assistant turns are
passed to the reader as conversation history (the last `MAX_HISTORY` of them; system messages
are dropped, the reader keeps its own). Retrieval uses the question alone. `model` is `rearqa`
(the configured reader method) or `rearqa/<method>`. Replies carry two extra fields, `citations`
and `answer` (the full POST /ask JSON); a stream ends with a chunk holding them, then
`data: [DONE]`. Streamed deltas are the raw generated text; `answer.text` is the cleaned answer.
"""
# No `from __future__ import annotations`: the request model is built per app (ServerState).
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException

from rearqa.app.schemas import ChatCompletionOut, ChatRequest, ModelList
from rearqa.app.state import ServerState, event_stream, unprocessable
from rearqa.reader import QuestionError, check_question
from rearqa.types import Answer

MODEL = "rearqa"
MAX_HISTORY = 6  # earlier messages kept as context (three exchanges)


def method_of(model: str, method: str | None, served: tuple[str, ...]) -> str | None:
    """The reader method a `model` name asks for (None: the configured one)."""
    if model == MODEL:
        return method
    name, _, wanted = model.partition("/")
    if name != MODEL or wanted not in served:
        raise HTTPException(404, f"model {model!r} is not served here; use {MODEL!r} or "
                                 f"{MODEL}/<method> with a method of {list(served)} (GET /v1/models)")
    if method is not None and method != wanted:
        raise unprocessable(["body", "method"], f"model {model!r} asks for method {wanted!r} but "
                                                f"method={method!r} was given")
    return wanted


def split_messages(request: ChatRequest, max_chars: int) -> tuple[str, list[dict]]:
    """(question, history) from the messages; 422 when the last one is not a user question."""
    *earlier, last = request.messages
    if last.role != "user":
        raise unprocessable(["body", "messages"], f"the last message is the {last.role!r}'s; it must be "
                                                  "the user's question (role 'user')")
    try:
        question = check_question(last.text(), max_chars)
    except QuestionError as exc:
        raise unprocessable(["body", "messages"], f"the last message: {exc}") from None
    history = [{"role": m.role, "content": m.text()} for m in earlier if m.role in ("user", "assistant")]
    history = history[-MAX_HISTORY:]
    for turn in history:
        if len(turn["content"]) > max_chars:
            raise unprocessable(["body", "messages"], f"an earlier message is {len(turn['content'])} "
                                                      f"characters long; the limit is {max_chars}")
    return question, history


def completion(answer: Answer, model: str, completion_id: str, created: int) -> dict:
    body = answer.to_dict()
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": "stop", "logprobs": None}],
            "citations": body["citations"], "answer": body}


def chunk(completion_id: str, created: int, model: str, delta: dict, finish: str | None = None,
          **extra: Any) -> bytes:
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


def openai_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"])
    max_chars = state.pipeline.config.reader.max_question_chars
    _, ChatRequestModel = state.request_models

    @router.get("/models", response_model=ModelList)
    async def models() -> dict:
        """`rearqa` (the configured method) and `rearqa/<method>` for the methods served."""
        methods = state.methods
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "rearqa"}
                                           for name in [MODEL, *(f"{MODEL}/{m}" for m in methods)]]}

    @router.post("/chat/completions", response_model=ChatCompletionOut,
                 responses={200: {"content": {"text/event-stream": {}}},
                            404: {"description": "unknown model"}})
    async def chat(body: ChatRequestModel):  # type: ignore[valid-type]
        """OpenAI chat completion (stream true/false) answered from the collection, with citations."""
        method = method_of(body.model, body.method, state.methods)
        question, history = split_messages(body, max_chars)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not history and not body.stream:
            answer = await state.ask(question, body, method)
            return completion(answer, body.model, completion_id, created)
        _, ticket, events = await state.open_stream(question, body, method, history)
        if not body.stream:
            answer = None
            async for kind, value in state.events_after(events, ticket):
                answer = value if kind == "answer" else answer
            return completion(answer, body.model, completion_id, created)

        async def chunks() -> AsyncIterator[bytes]:
            yield chunk(completion_id, created, body.model, {"role": "assistant", "content": ""})
            async for kind, value in state.events_after(events, ticket):
                if kind == "token":
                    if value:  # the streamer also releases empty pieces
                        yield chunk(completion_id, created, body.model, {"content": value})
                else:
                    full = value.to_dict()
                    yield chunk(completion_id, created, body.model, {}, "stop",
                                citations=full["citations"], answer=full)
            yield b"data: [DONE]\n\n"

        return event_stream(chunks(), ticket)

    return router
