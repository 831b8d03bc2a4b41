"""File loaders, registered by suffix: each turns one file into raw documents plus issues.

A loader never raises for a bad file: unreadable files, undecodable text and malformed JSONL
lines become `IngestIssue`s (with the line number where there is one), so one bad file or line
does not abort a batch and every good record is kept. An unsupported suffix is the one error
raised (`UnsupportedFileError`, listing the registered suffixes).

JSONL records: `text` (required, non-empty string), `title` and `id` (optional), `tags`
(optional string or list of strings); every other key goes to the record's metadata.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from rearqa.retriever.errors import UnsupportedFileError


@dataclass
class IngestIssue:
    """A problem with one input file or line; the rest of the batch is still ingested."""

    source: str  # file path (or record source name)
    line: int | None  # 1-based line (JSONL) or record number (add_records); None for whole files
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.message}"


@dataclass
class RawDocument:
    """One document as a loader found it, before chunking."""

    text: str
    title: str = ""
    record_id: str | None = None  # the JSONL record's own "id", if it has one
    line: int | None = None  # JSONL line / record number
    metadata: dict[str, Any] = field(default_factory=dict)  # tags and other user metadata
    page_word_offsets: list[int] | None = None  # PDF: index of each page's first word


@dataclass
class LoadedFile:
    documents: list[RawDocument] = field(default_factory=list)
    issues: list[IngestIssue] = field(default_factory=list)


Loader = Callable[[Path], LoadedFile]
LOADERS: dict[str, Loader] = {}  # file suffix (lower case, with dot) -> loader


def register_loader(*suffixes: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        for suffix in suffixes:
            LOADERS[suffix.lower()] = fn
        return fn
    return wrap


def loader_for(path: Path) -> Loader:
    try:
        return LOADERS[path.suffix.lower()]
    except KeyError:
        raise UnsupportedFileError(f"{path}: no loader for suffix {path.suffix!r}; supported suffixes "
                                   f"are {sorted(LOADERS)}") from None


def iter_input_files(paths: Iterable[str | Path]) -> Iterator[Path | IngestIssue]:
    """Files to ingest: given files as they are, folders walked recursively for supported
    suffixes (hidden files and folders skipped); a missing path yields an issue."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and child.suffix.lower() in LOADERS:
                    yield child.resolve()
        elif path.is_file():
            yield path.resolve()
        else:
            yield IngestIssue(str(path), None, "no such file or folder")


def load_file(path: Path) -> LoadedFile:
    try:
        loader = loader_for(path)
    except UnsupportedFileError as exc:
        return LoadedFile(issues=[IngestIssue(str(path), None, str(exc).split(": ", 1)[1])])
    try:
        return loader(path)
    except OSError as exc:
        return LoadedFile(issues=[IngestIssue(str(path), None, f"cannot read the file: {exc.strerror or exc}")])


def _decode(path: Path, data: bytes) -> tuple[str | None, IngestIssue | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, IngestIssue(str(path), None, f"not UTF-8 text (bad byte at offset {exc.start}); "
                                 "re-save the file as UTF-8")


def _one_document(path: Path, text: str, title: str, metadata: dict | None = None) -> LoadedFile:
    if not text.strip():
        return LoadedFile(issues=[IngestIssue(str(path), None, "no text found; nothing to index")])
    return LoadedFile([RawDocument(text=text, title=title or path.stem, metadata=metadata or {})])


# -- JSONL --------------------------------------------------------------------------------------
def parse_record(record: Any, source: str, line: int) -> RawDocument | IngestIssue:
    """Validate one JSONL object; `line` is its 1-based line (or record number)."""
    def bad(message: str) -> IngestIssue:
        return IngestIssue(source, line, message)

    if not isinstance(record, dict):
        return bad(f"expected a JSON object with a 'text' key, got {type(record).__name__}")
    text, title, rid, tags = (record.get(k) for k in ("text", "title", "id", "tags"))
    if not isinstance(text, str):
        return bad("missing 'text'" if text is None else f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        return bad("'text' is empty; record skipped")
    if title is not None and not isinstance(title, str):
        return bad(f"'title' must be a string, got {type(title).__name__}")
    if rid is not None:
        if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
            return bad(f"'id' must be a non-empty string or integer, got {rid!r}")
        if "#" in str(rid):
            return bad(f"'id' {rid!r} contains '#', which rearqa reserves for chunk numbers (id#n)")
    if tags is not None and not (isinstance(tags, str) or
                                 (isinstance(tags, list) and all(isinstance(t, str) for t in tags))):
        return bad(f"'tags' must be a string or a list of strings, got {tags!r}")
    metadata = {k: v for k, v in record.items() if k not in ("text", "title", "id")}
    if isinstance(tags, str):
        metadata["tags"] = [tags]
    return RawDocument(text=text, title=(title or "").strip(), line=line, metadata=metadata,
                       record_id=None if rid is None else str(rid).strip())


@register_loader(".jsonl", ".ndjson")
def load_jsonl(path: Path) -> LoadedFile:
    out = LoadedFile()
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8").strip()
            except UnicodeDecodeError as exc:
                out.issues.append(IngestIssue(str(path), line_no, f"not UTF-8 (bad byte at column {exc.start + 1})"))
                continue
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                out.issues.append(IngestIssue(str(path), line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"))
                continue
            parsed = parse_record(record, str(path), line_no)
            (out.issues if isinstance(parsed, IngestIssue) else out.documents).append(parsed)
    return out


# -- plain text and Markdown --------------------------------------------------------------------
@register_loader(".txt", ".text")
def load_text(path: Path) -> LoadedFile:
    text, issue = _decode(path, path.read_bytes())
    return LoadedFile(issues=[issue]) if issue else _one_document(path, text, path.stem)


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


@register_loader(".md", ".markdown")
def load_markdown(path: Path) -> LoadedFile:
    """Markdown as text: optional YAML front matter (title, tags, other keys -> metadata), the
    first heading as title, heading markers and HTML comments removed."""
    text, issue = _decode(path, path.read_bytes())
    if issue:
        return LoadedFile(issues=[issue])
    metadata: dict[str, Any] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            front = yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            return LoadedFile(issues=[IngestIssue(str(path), None, f"bad YAML front matter: {exc}")])
        if isinstance(front, dict):
            metadata = {str(k): v for k, v in front.items()}
            text = text[match.end():]
    title = str(metadata.pop("title", "") or "")
    if isinstance(metadata.get("tags"), str):
        metadata["tags"] = [metadata["tags"]]
    heading = _HEADING.search(text)
    title = title or (heading.group(1) if heading else path.stem)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = _HEADING.sub(lambda m: m.group(1), text)
    try:
        json.dumps(metadata)
    except TypeError as exc:
        return LoadedFile(issues=[IngestIssue(str(path), None, f"front matter values must be plain "
                                              f"strings, numbers or lists: {exc}")])
    return _one_document(path, text, title, metadata)


# -- HTML -----------------------------------------------------------------------------------------
class _TextExtractor(HTMLParser):
    """Visible text of an HTML page: script/style/template content dropped, block tags broken."""

    SKIP = {"script", "style", "noscript", "template"}
    BLOCK = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table",
             "section", "article", "header", "footer", "blockquote", "pre", "hr", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self._skip = 0
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n")
        self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        current = self._stack[-1] if self._stack else ""
        if current == "title":
            self.title_parts.append(data)
        elif self._skip == 0:
            self.parts.append(data)
            if "h1" in self._stack:
                self.h1_parts.append(data)


@register_loader(".html", ".htm")
def load_html(path: Path) -> LoadedFile:
    text, issue = _decode(path, path.read_bytes())
    if issue:
        return LoadedFile(issues=[issue])
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    title = " ".join("".join(parser.title_parts).split()) or " ".join("".join(parser.h1_parts).split())
    return _one_document(path, "".join(parser.parts), title)


# -- PDF ------------------------------------------------------------------------------------------
@register_loader(".pdf")
def load_pdf(path: Path) -> LoadedFile:
    """Text layer of every page via pypdf; chunks get the page they start on as metadata."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            return LoadedFile(issues=[IngestIssue(str(path), None, "encrypted PDF; decrypt it first")])
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    # pypdf raises many exception types on malformed files (PdfReadError, ValueError, KeyError,
    # struct.error ...); each becomes an issue naming the file, and the batch goes on.
    except Exception as exc:  # noqa: BLE001
        return LoadedFile(issues=[IngestIssue(str(path), None, f"cannot parse PDF ({type(exc).__name__}: {exc})")])
    offsets, words = [], 0
    for page in pages:
        offsets.append(words)
        words += len(page.split())
    if words == 0:
        return LoadedFile(issues=[IngestIssue(str(path), None, "no text layer found (scanned PDF?); "
                                              "run OCR first")])
    doc = RawDocument(text="\n".join(pages), title=str(meta_title or path.stem),
                      page_word_offsets=offsets)
    return LoadedFile([doc])
