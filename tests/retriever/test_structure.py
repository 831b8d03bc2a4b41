"""The retriever package's shape: no import cycle among its modules (TYPE_CHECKING imports
included), only the composer imports `collection`, the settings import no heavy library, every
registry entry resolves, and `Collection` provides everything `CollectionView` promises."""
from __future__ import annotations

import subprocess
import sys


from rearqa.registry import resolve
from rearqa.retriever.config import FUSIONS, RETRIEVERS
from rearqa.testing import import_cycles, import_graph

PACKAGE = "rearqa.retriever"


def _graph() -> dict[str, set[str]]:
    """The import graph of the retriever package's own modules."""
    return {m: {t for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")}
            for m, targets in import_graph().items() if m == PACKAGE or m.startswith(PACKAGE + ".")}


def test_no_import_cycle_among_retriever_modules():
    assert import_cycles(_graph()) == []


def test_only_the_package_reaches_the_collection():
    importers = {m for m, targets in _graph().items() if f"{PACKAGE}.collection" in targets}
    assert importers <= {PACKAGE}, importers


def test_settings_and_registries_import_no_heavy_library():
    code = ("import sys, rearqa.retriever, rearqa.retriever.config\n"
            "heavy = [m for m in ('numpy', 'faiss', 'bm25s', 'torch', 'sentence_transformers',"
            " 'rearqa.retriever.base', 'rearqa.retriever.collection') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_registered_retriever_and_fusion_resolves():
    for kind in RETRIEVERS:
        cls = resolve(RETRIEVERS, kind, "retriever")
        assert cls.name == kind and callable(cls.from_collection)
    for name in FUSIONS:
        assert callable(resolve(FUSIONS, name, "fusion"))


def test_collection_provides_the_collection_view(tmp_path):
    from rearqa.retriever import Collection, CollectionView
    from rearqa.retriever.base import PassageLookup

    def members(protocol: type) -> set[str]:
        names = set(protocol.__annotations__)
        names |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
        return names

    with Collection(tmp_path / "col") as col:
        assert {n for n in members(CollectionView) if not hasattr(col, n)} == set()
        assert {n for n in members(PassageLookup) if not hasattr(col.docstore, n)} == set()
