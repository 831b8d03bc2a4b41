"""question -> retriever -> reader -> Answer.

`Pipeline` owns one document collection (docstore + indexes) and one reader, both opened lazily
on first use. The embedded default collection `wiki` is built from the bundled Wikipedia
summaries the first time it is opened (with a progress bar); any other collection starts empty
and is filled with `rearqa index add` or `Pipeline.collection.add_paths`.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rearqa import assets
from rearqa.config import PipelineConfig
from rearqa.reader import build_reader, check_question, get_reader_class
from rearqa.reader.base import close_reader
from rearqa.reader.config import CLOSED_BOOK_METHODS
from rearqa.types import Answer, Passage

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "wiki"


class Pipeline:
    """The question-answering system: retrieve passages, then read them."""

    def __init__(self, config: PipelineConfig | None = None, *, home: str | Path | None = None,
                 **overrides: Any) -> None:
        """`overrides` are top-level PipelineConfig fields, e.g. `Pipeline(k=3)`."""
        config = config or PipelineConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.home = Path(home) if home else assets.home()
        self._collection = None
        self._readers: dict[tuple, Any] = {}  # (reader class, method or None) -> reader
        self._backbones: dict[str, str] = {}  # method -> its backbone's label

    @classmethod
    def from_yaml(cls, path: str | Path, **kwargs: Any) -> "Pipeline":
        return cls(PipelineConfig.from_yaml(path), **kwargs)

    def with_reader(self, **changes: Any) -> "Pipeline":
        """A pipeline with other reader settings (e.g. engine, routing) over this same
        collection object, so documents added through either are searched by both."""
        config = dataclasses.replace(self.config,
                                     reader=dataclasses.replace(self.config.reader, **changes))
        sibling = Pipeline(config, home=self.home)
        sibling._collection = self.collection
        return sibling

    # -- components, opened on first use ------------------------------------------------------
    @property
    def collection_path(self) -> Path:
        """The collection's folder (known without opening it)."""
        return self.home / "indexes" / self.config.retriever.collection

    @property
    def collection(self):
        if self._collection is None:
            from rearqa.retriever import Collection

            name = self.config.retriever.collection
            collection = Collection(self.collection_path, self.config.retriever)
            if name == DEFAULT_COLLECTION and collection.is_empty():
                assets.ensure_prepared(self.home)
                log.info("building the default collection from %s", assets.corpus_file(self.home))
                collection.add_paths([assets.corpus_file(self.home)], progress=True)
            self._collection = collection
        return self._collection

    @property
    def reader(self):
        """The reader of the configured method (reader.method)."""
        return self.reader_for(self.config.reader.method)

    def reader_for(self, method: str | None = None):
        """The reader that serves `method`, opened on first use and kept (one per reader class
        and settings, so rag and closed-book share one model)."""
        method = method or self.config.reader.method
        cls = get_reader_class(method)  # raises for an unknown method, listing the valid ones
        # rag-ft and closed-book-ft load different adapters into one reader class: one each
        key = (cls, method if getattr(cls, "reader_per_method", False) else None)
        if key not in self._readers:
            model_dir = self.config.reader.model
            if not model_dir:
                assets.ensure_prepared(self.home)
                model_dir = assets.reader_model_dir(self.home)
            config = self.config.reader
            if config.method != method:  # a reader built for `method` reads its own settings
                config = dataclasses.replace(config, method=method)
            self._readers[key] = build_reader(method, config, model_dir)
        return self._readers[key]

    def close_readers(self) -> None:
        """Stop the readers opened so far (a vLLM reader's engine processes outlive this one
        otherwise when it is stopped)."""
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            close_reader(reader)

    # -- retrieval ------------------------------------------------------------------------------
    def retrieve(self, question: str, k: int | None = None, *, filters: dict | None = None,
                 retriever: str | None = None) -> list[Passage]:
        return self.retrieve_batch([question], k, filters=filters, retriever=retriever)[0]

    def retrieve_batch(self, questions: list[str], k: int | None = None, *,
                       filters: dict | None = None, retriever: str | None = None) -> list[list[Passage]]:
        return self._search(self._checked(questions), k, filters, retriever)

    def _checked(self, questions: list[str]) -> list[str]:
        """The questions as they enter: checked once here, stripped (QuestionError otherwise)."""
        limit = self.config.reader.max_question_chars
        return [check_question(q, limit) for q in questions]

    def _search(self, questions: list[str], k: int | None, filters: dict | None,
                retriever: str | None) -> list[list[Passage]]:
        search = self.collection.retriever(retriever or self.config.retriever.kind)
        return search.search_batch(questions, k or self.config.k, filters=filters)

    # -- reading --------------------------------------------------------------------------------
    def read_batch(self, questions: list[str], passages: list[list[Passage]],
                   method: str | None = None) -> list[Answer]:
        answers = self.reader_for(method).read_batch(questions, passages, method)
        backbone = self.backbone(method)
        for answer in answers:
            answer.backbone = backbone
        return answers

    def backbone(self, method: str | None = None) -> str:
        """The backbone `method` reads with: "original", or the transform that converted the
        weights it loads (backbone.json beside them), e.g. "transmla(96+64)", and TPLA's decode
        mode where reader.tp_shards is set ("transmla(192+64) + tpla(2 shards, pca)"), and the
        inference-time backbone where reader.backbone is set ("original + spatten:tokens=0.6,...")."""
        method = method or self.config.reader.method
        if method not in self._backbones:
            from rearqa.reader.backbone.loading import backbone_label
            from rearqa.reader.config import INFERENCE_BACKBONE_METHODS, TPLA_METHODS

            tpla = self.config.reader.tpla() if method in TPLA_METHODS else None
            inference = self.config.reader.backbone if method in INFERENCE_BACKBONE_METHODS else ""
            self._backbones[method] = backbone_label(self._weights_dir(method), tpla, inference)
        return self._backbones[method]

    def _weights_dir(self, method: str) -> Path:
        """Where `method`'s causal LM weights are read from: a plain REAR checkpoint holds its
        own; every other reader reads reader.model (or the bundled model)."""
        if method == "rear":
            from rearqa.reader.config import resolve_checkpoint
            from rearqa.reader.rear.checkpoint import read_meta

            checkpoint = resolve_checkpoint(self.config.reader)
            if read_meta(checkpoint)["kind"] == "plain":
                return checkpoint
        if self.config.reader.model:
            return Path(self.config.reader.model)
        return assets.reader_model_dir(self.home)

    def ask(self, question: str, k: int | None = None, *, filters: dict | None = None,
            method: str | None = None, retriever: str | None = None) -> Answer:
        """Answer one question with citations."""
        return self.ask_batch([question], k, filters=filters, method=method, retriever=retriever)[0]

    def ask_batch(self, questions: list[str], k: int | None = None, *, filters: dict | None = None,
                  method: str | None = None, retriever: str | None = None) -> list[Answer]:
        """Answer many questions; generation is batched (reader.batch_size)."""
        method = method or self.config.reader.method
        questions = self._checked(questions)
        passages: list[list[Passage]] = ([[] for _ in questions] if method in CLOSED_BOOK_METHODS
                                         else self._search(questions, k, filters, retriever))
        return self.read_batch(questions, passages, method)

    def stream(self, question: str, k: int | None = None, *, filters: dict | None = None,
               method: str | None = None, retriever: str | None = None,
               history: list[dict] | None = None, query: str | None = None
               ) -> Iterator[tuple[str, Any]]:
        """Yield ("passages", list[Passage]), then ("token", str) pieces, then ("answer", Answer).

        `history`: earlier chat messages ({"role", "content"}) for readers that use them.
        `query`: the retrieval query when it differs from the question (a chat follow-up
        searched together with the turn it refers to); default the question itself."""
        method = method or self.config.reader.method
        question = self._checked([question])[0]
        query = question if query is None else self._checked([query])[0]
        passages = [] if method in CLOSED_BOOK_METHODS else self._search([query], k, filters,
                                                                        retriever)[0]
        yield "passages", passages
        for item in self.reader_for(method).stream(question, passages, method, history):
            if isinstance(item, Answer):
                item.backbone = self.backbone(method)
                yield "answer", item
            else:
                yield "token", item
