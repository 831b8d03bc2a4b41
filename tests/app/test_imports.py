"""The app package's imports form no circle: the routers import the shared state (state.py), the
composition root (server.py) imports the routers, and nothing imports back up. Every import
statement counts, also those inside functions and under TYPE_CHECKING."""
import ast
from pathlib import Path

import rearqa.app

APP = Path(rearqa.app.__file__).parent


def _imported(path: Path, package: str) -> set[str]:
    """Every rearqa module `path` imports (for `from m import x`: m.x when that is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n == "rearqa" or n.startswith("rearqa.")}


def _app_graph() -> dict[str, set[str]]:
    modules = {f"rearqa.app.{p.stem}": p for p in APP.glob("*.py") if p.stem != "__init__"}
    return {name: _imported(path, "rearqa.app") & set(modules) for name, path in modules.items()}


def test_app_modules_import_no_circle():
    graph, done, path = _app_graph(), set(), []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError(f"import circle: {' -> '.join(path[path.index(module):] + [module])}")
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_app_modules_do_not_reach_the_root_package():
    """`from rearqa import X` is only for submodules (assets); the root's names come from their homes."""
    for path in APP.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert all(a.name != "rearqa" for a in node.names), f"{path.name}: import rearqa"
            elif isinstance(node, ast.ImportFrom) and node.module == "rearqa" and not node.level:
                for alias in node.names:
                    submodule = (APP.parent / f"{alias.name}.py").exists() or (APP.parent / alias.name).is_dir()
                    assert submodule, f"{path.name}: from rearqa import {alias.name} (import it from its module)"


def test_app_modules_leave_the_hub_switches_to_rearqa_environment():
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set in one place: environment.set_offline_defaults."""
    for path in APP.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "HF_HUB_OFFLINE" not in text and "TRANSFORMERS_OFFLINE" not in text, path.name
