"""The retriever package's shape: no import cycle among its modules (TYPE_CHECKING imports
included), only the composer imports `collection`, the settings import no heavy library, every
registry entry resolves, and `Collection` provides everything `CollectionView` promises."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rearqa.retriever
from rearqa.registry import resolve
from rearqa.retriever.config import FUSIONS, RETRIEVERS

PACKAGE = "rearqa.retriever"
ROOT = Path(rearqa.retriever.__file__).parent


def _module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imports(path: Path) -> set[str]:
    """Every rearqa.retriever.* module `path` imports, anywhere in the file (lazy and
    TYPE_CHECKING imports too). `from rearqa.retriever import X` counts as X's module when X is
    a module, else as the package."""
    modules = {_module_name(p) for p in ROOT.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {_module_name(path)}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(ROOT.glob("*.py"))}


def test_no_import_cycle_among_retriever_modules():
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, trail + [module])
        done.add(module)

    for module in graph:
        visit(module, [])


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
