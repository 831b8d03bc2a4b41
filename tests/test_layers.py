"""The house's layers, checked over the source (STYLE rule 14; docs/architecture.md).

Every `import` / `from ... import` in src/rearqa is read with ast, the ones inside functions and
`if TYPE_CHECKING:` blocks included (a lazy import is still a dependency). Then:
- a module imports nothing from a higher layer, and reader and retriever not each other;
- nothing inside the package imports the root package `rearqa` (the public facade, on top);
- no two modules import each other, directly or round a longer loop;
- the torch-free config modules stay torch-free when imported.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rearqa"

# Top down. A module belongs to the first prefix it starts with (most specific first).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("app", ("rearqa.app",)),
    ("training", ("rearqa.training",)),
    ("eval", ("rearqa.eval",)),
    ("pipeline", ("rearqa.pipeline", "rearqa.config", "rearqa.assets", "rearqa.data_prep",
                  "rearqa.asset_steps")),
    ("reader", ("rearqa.reader",)),
    ("retriever", ("rearqa.retriever",)),
    ("kernels", ("rearqa.kernels",)),
    ("leaves", ("rearqa.config_errors", "rearqa.config_base", "rearqa.types", "rearqa.registry",
                "rearqa.files", "rearqa.normalize", "rearqa.environment", "rearqa.testing")),
]
RANK = {"app": 6, "training": 5, "eval": 4, "pipeline": 3, "reader": 2, "retriever": 2,
        "kernels": 1, "leaves": 0}
TORCH_FREE = ["rearqa.config", "rearqa.reader.config", "rearqa.retriever.config",
              "rearqa.training.config", "rearqa.reader.rear.config", "rearqa.reader.backbone.config",
              "rearqa.reader.adapters.config", "rearqa.kernels.config", "rearqa.registry"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> str:
    if module == "rearqa":
        return "app"  # the public facade sits on top
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def imported_modules(module: str) -> set[str]:
    """The rearqa modules `module` imports (a `from pkg import name` counts as pkg.name where that
    is a module, else as pkg)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t == "rearqa" or t.startswith("rearqa.")}
    return {t for t in found if t != module}


GRAPH = {m: imported_modules(m) for m in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, targets in GRAPH.items():
        if module == "rearqa":
            continue
        for target in targets:
            if target == "rearqa":
                wrong.append(f"{module} imports the root package (import the defining module)")
                continue
            here, there = layer_of(module), layer_of(target)
            if RANK[there] > RANK[here] or (RANK[there] == RANK[here] and here != there):
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_check_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_config_modules_import_no_heavy_package(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'numpy', 'faiss', 'transformers', 'peft', 'vllm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"
