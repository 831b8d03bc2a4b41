"""Fixtures for the retriever tests: the real MiniLM embedder (loaded once per session), small
synthetic documents, a hand-written PDF, and a collection factory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rearqa.retriever import RetrieverConfig

RECORDS = [
    {"id": "hamlet", "title": "Hamlet", "tags": ["play", "drama"],
     "text": "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601."},
    {"id": "paris", "title": "Paris", "topic": "geography",
     "text": "Paris is the capital and most populous city of France, on the river Seine."},
    {"id": "cat", "title": "Cat", "topic": "animals",
     "text": "The cat is a small domesticated carnivorous mammal, often kept as a house pet."},
    {"id": "volcano", "title": "Volcano", "topic": "geography",
     "text": "A volcano is a rupture in the crust of a planet through which lava and gases escape."},
    {"id": "python", "title": "Python", "tags": ["software"],
     "text": "Python is a high-level programming language known for its readable syntax."},
    {"id": "tea", "title": "Tea", "topic": "food",
     "text": "Tea is an aromatic beverage prepared by pouring hot water over cured leaves."},
]


@pytest.fixture(scope="package", autouse=True)
def one_faiss_thread():
    """FAISS's OpenMP threads spin against each other on a small shared machine (k-means takes
    6 s instead of 0.7 s on 2 busy cores); one thread keeps these tiny tests fast."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def embedder():
    from rearqa.retriever import get_embedder

    return get_embedder("all-MiniLM-L6-v2")


@pytest.fixture
def make_collection(tmp_path, embedder):
    from rearqa.retriever import Collection

    def make(name: str = "col", **overrides) -> Collection:
        return Collection(tmp_path / name, RetrieverConfig(**overrides))
    return make


@pytest.fixture
def records():
    return [dict(r) for r in RECORDS]


@pytest.fixture
def filled(make_collection):
    """A Flat collection holding RECORDS."""
    col = make_collection()
    result = col.add_records(RECORDS, source="synthetic", progress=False)
    assert result.added == len(RECORDS) and result.ok
    return col


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _make_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    """A minimal valid PDF with one Helvetica text line per page (pypdf cannot draw text)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    font = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, text in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info = None
    if title:
        objects.append(f"<< /Title ({title}) >>".encode())
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "") + " >>"
    out += b"trailer\n" + trailer.encode() + b"\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def make_pdf():
    return _make_pdf
