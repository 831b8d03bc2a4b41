"""The house's layers, checked over the source (STYLE rule 14; docs/architecture.md).

Every `import` / `from ... import` in src/rearqa is read with ast, the ones inside functions and
`if TYPE_CHECKING:` blocks included (a lazy import is still a dependency). Then:
- a module imports nothing from a higher layer, and reader and retriever not each other;
- nothing inside the package imports the root package `rearqa` (the public facade, on top);
- no two modules import each other, directly or round a longer loop;
- the torch-free config modules stay torch-free when imported.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from rearqa.testing import import_cycles, import_graph

# Top down. A module belongs to the first prefix it starts with (most specific first).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("app", ("rearqa.app",)),
    ("training", ("rearqa.training",)),
    ("eval", ("rearqa.eval",)),
    ("pipeline", ("rearqa.pipeline", "rearqa.config", "rearqa.assets", "rearqa.data_prep",
                  "rearqa.asset_steps", "rearqa.asset_paths")),
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


def layer_of(module: str) -> str:
    if module == "rearqa":
        return "app"  # the public facade sits on top
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


GRAPH = import_graph()
MODULES = set(GRAPH)



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


def test_no_importimport_cycles():
    assert import_cycles(GRAPH) == []


def test_the_cycle_check_finds_a_loop():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_config_modules_import_no_heavy_package(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('torch', 'numpy', 'faiss', 'transformers', 'peft', 'vllm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"


def test_only_the_environment_module_sets_the_hub_switches():
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE have one home: rearqa.environment."""
    from rearqa.testing import PACKAGE_DIR

    setters = [str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*.py")
               if "HF_HUB_OFFLINE" in p.read_text(encoding="utf-8")]
    assert setters == ["environment.py"]
