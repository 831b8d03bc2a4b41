"""Request and response bodies of the HTTP API (pydantic), and so of its OpenAPI schema.

The answer bodies mirror `Answer.to_dict()` (the same JSON `rearqa ask --json` prints), so a
client sees one shape whichever way it asks. The question's length limit is the pipeline's
`reader.max_question_chars`, so the request model is built per app (`ask_request_model`).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema,
                      create_model, field_validator)

from rearqa.reader.config import READER_METHODS
from rearqa.retriever.config import RETRIEVERS
from rearqa.retriever.filters import KEY_PATTERN, SQL_INT_MAX, SQL_INT_MIN

MAX_K = 50  # passages per question; more only slows the reader down


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: a number with no fraction (2 and 2.0), never true or "2"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
SqlInt = Annotated[JsonInt, Field(ge=SQL_INT_MIN, le=SQL_INT_MAX)]
Scalar = str | SqlInt | Annotated[float, Field(allow_inf_nan=False)] | bool
# Filter keys and values as rearqa.retriever.filters accepts them; the schema is written out
# because pydantic states key patterns as patternProperties, which leave other keys allowed.
_SCALAR_SCHEMA = [{"type": "string"}, {"type": "integer", "minimum": SQL_INT_MIN, "maximum": SQL_INT_MAX},
                  {"type": "number"}, {"type": "boolean"}]
Filters = Annotated[
    dict[Annotated[str, StringConstraints(pattern=KEY_PATTERN)], Scalar | Annotated[list[Scalar], Field(min_length=1)]],
    WithJsonSchema({"type": "object", "propertyNames": {"pattern": KEY_PATTERN},
                    "additionalProperties": {"anyOf": [*_SCALAR_SCHEMA, {"type": "array", "minItems": 1,
                                                                         "items": {"anyOf": _SCALAR_SCHEMA}}]}})]
RetrieverName = Literal[tuple(RETRIEVERS)]  # type: ignore[valid-type]
MethodName = Literal[READER_METHODS]  # type: ignore[valid-type]
ALWAYS_SERVED = ("rag", "closed-book")  # reader methods that need no trained checkpoint or adapter


class AskOptions(BaseModel):
    """How to answer: the pipeline's configured values where a field is left out."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=1, le=MAX_K, description="Passages to retrieve (default: config k).")
    retriever: RetrieverName | None = Field(None, description="dense | bm25 | hybrid (default: config).")
    method: MethodName | None = Field(None, description="Reader method (default: config reader.method).")
    filters: Filters | None = Field(
        None, description='Metadata filters, e.g. {"tags": "geo"} or {"title": ["Paris", "Hamlet"]}.')

    _k_is_a_json_integer = field_validator("k", mode="before")(lambda v: v if v is None else _json_integer(v))


# "Has a character that is not whitespace", with whitespace spelled out as Python's str.isspace()
# (what check_question strips): `\S` differs between regex engines (U+0085 is whitespace to
# Python and Rust, not to ECMA-262, the dialect of OpenAPI patterns).
NOT_BLANK = r"[^\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def question_field(max_chars: int) -> Any:
    return Field(..., min_length=1, max_length=max_chars, pattern=NOT_BLANK,
                 description=f"The question: not blank, at most {max_chars} characters.",
                 examples=["Who wrote Hamlet?"])


def served_methods(configured: str) -> tuple[str, ...]:
    """Reader methods a server offers: those needing no trained checkpoint, and the configured one."""
    return tuple(dict.fromkeys([*ALWAYS_SERVED, configured]))


def request_models(max_chars: int, methods: tuple[str, ...]) -> tuple[type["AskOptions"], type["ChatRequest"]]:
    """The POST /ask and /v1/chat/completions bodies of a pipeline whose questions may be
    `max_chars` long and that serves `methods` (so the schema promises only what works)."""
    method = (Literal[methods] | None,  # type: ignore[valid-type]
              Field(None, description=f"Reader method: {' | '.join(methods)} (default: config reader.method)."))
    ask = create_model("AskRequest", __base__=AskOptions, question=(str, question_field(max_chars)), method=method)
    chat = create_model("ChatRequest", __base__=ChatRequest, method=method)
    return ask, chat


class PassageOut(BaseModel):
    id: str = Field(description="Stable chunk id (DELETE /documents/{id} accepts it).")
    text: str = Field(description="The chunk text, verbatim (plain text, never HTML).")
    title: str
    score: float = Field(description="Retrieval score; higher is better.")
    source: str = Field(description="Where the chunk came from (file path or corpus name).")
    metadata: dict[str, Any]


class CitationOut(BaseModel):
    passage: PassageOut
    relevance: float | None = Field(description="Reader's relevance logit (REAR); null for plain RAG.")
    judgment: str | None = Field(description="relevant | irrelevant (REAR); null for plain RAG.")
    answer: str | None = Field(description="The answer from this passage alone (REAR); null for plain RAG.")
    probability: float | None = Field(
        default=None, description="The relevance as the probability that this passage holds the answer "
        "(REAR's logit through its dev-select calibration); null when the reader has none.")


class AnswerOut(BaseModel):
    question: str
    text: str = Field(description="The answer; empty when the reader abstained.")
    method: str
    abstained: bool
    from_own_knowledge: bool
    citations: list[CitationOut]
    cited: list[int] = Field(
        default_factory=list,
        description="Positions in `citations` (0-based) of the passages the answer rests on, in "
                    "order: rag the passages it was given, rear the one its routing chose; empty "
                    "for closed-book answers and abstentions. The chat shows them as [i + 1].")
    backbone: str = Field("", description="The reader's backbone: 'original', or the transform "
                                           "that converted it, e.g. 'transmla(96+64)'.")
    backbone_cost: dict[str, float] = Field(
        default_factory=dict,
        description="What an inference-time backbone (SpAtten) spent on this answer: attention "
                    "FLOPs and KV bytes per phase, unpruned (dense_*) beside pruned, and the prompt "
                    "tokens it pruned; empty without one.")


class DocumentOut(BaseModel):
    id: str = Field(description="Document id (DELETE /documents/{id} deletes all its chunks).")
    title: str
    source: str
    chunks: int
    metadata: dict[str, Any]
    added_at: float = Field(description="Unix time it was stored.")


class PageQuery(BaseModel):
    """GET /documents parameters; an unknown one (a typo such as `lmit`) is refused."""

    model_config = ConfigDict(extra="forbid")

    offset: int = Field(0, ge=0, le=SQL_INT_MAX, description="Documents to skip.")
    limit: int = Field(50, ge=1, le=500, description="Documents to return.")


class DocumentPage(BaseModel):
    documents: list[DocumentOut]
    total: int
    offset: int
    limit: int


class UploadOut(BaseModel):
    filename: str
    ids: list[str] = Field(description="Ids of the documents the file holds now.")
    count: int = Field(description="Chunks the file holds now.")
    added: int
    updated: int
    unchanged: int
    skipped_duplicates: int
    chunks_added: int
    chunks_deleted: int
    errors: list[str] = Field(description="Lines or parts of the file that were skipped, and why.")


JobState = Literal["queued", "running", "done", "failed", "interrupted"]


class JobOut(BaseModel):
    """An ingestion job (POST /documents answers 202 with one for a large file)."""

    id: str = Field(description="GET /jobs/{id} reports on it.")
    filename: str
    state: JobState = Field(description="queued -> running -> done | failed; interrupted when the server "
                                        "stopped while it was queued or running (its committed batches stay; "
                                        "upload the file again to complete it).")
    chunks_done: int = Field(description="Chunks committed so far: durable and searchable.")
    chunks_total: int | None = Field(description="Chunks to add; null until the file is read.")
    documents_done: int = Field(description="Documents whose every chunk is committed.")
    documents_total: int | None = Field(description="Documents to add; null until the file is read.")
    errors: list[str] = Field(description="Lines or parts of the file that were skipped, and why; or why "
                                          "the job failed.")
    result: UploadOut | None = Field(description="Once done: what a synchronous upload answers.")
    created_at: float = Field(description="Unix time it was submitted.")
    started_at: float | None
    finished_at: float | None


class DeleteOut(BaseModel):
    id: str
    chunks_deleted: int


class QueueOut(BaseModel):
    in_flight: int
    waiting: int
    max_in_flight: int
    max_waiting: int


class HealthOut(BaseModel):
    status: Literal["ready", "loading", "error"]
    model: str
    method: str
    backbone: str = Field("", description="The default method's reader backbone: 'original' or "
                                          "the transform that converted it; '' while loading.")
    collection: str
    documents: int | None = Field(description="null until the collection is open.")
    chunks: int | None
    queue: QueueOut
    error: str | None = None


# -- OpenAI-compatible chat -----------------------------------------------------------------------
class ContentPart(BaseModel):
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatRequest(AskOptions):
    """OpenAI's chat completion body; sampling fields (temperature, top_p, ...) are accepted and
    ignored (the reader decodes greedily). k, retriever, method and filters are rearqa extras."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field("rearqa", description="rearqa, or rearqa/<method> (GET /v1/models).")
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=64)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only one choice is generated.")

    _n_is_a_json_integer = field_validator("n", mode="before")(_json_integer)


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    citations: list[CitationOut] = Field(description="rearqa extra: the passages behind the answer.")
    answer: AnswerOut = Field(description="rearqa extra: the full answer (abstained, method, ...).")


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rearqa"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]
