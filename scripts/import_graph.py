"""Print rearqa's import graph between its parts, top layer first (the picture in
docs/architecture.md). A part is a subpackage of reader/ or a top-level package or module;
an arrow `a -> b` means some module of a imports some module of b (lazy imports included).

    python scripts/import_graph.py            # text, for the docs
    python scripts/import_graph.py --dot      # Graphviz, for a drawing
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from rearqa.testing import import_graph

ORDER = ["rearqa", "app", "training", "eval", "pipeline", "config", "assets", "asset_steps",
         "asset_paths", "data_prep", "reader", "reader.engines", "reader.rear", "reader.backbone",
         "reader.adapters", "retriever", "kernels", "config_base", "config_errors", "types",
         "registry", "files", "normalize", "environment", "testing"]


def part(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "rearqa"
    if parts[0] == "reader" and len(parts) > 1 and parts[1] in ("engines", "rear", "backbone", "adapters"):
        return f"reader.{parts[1]}"
    return parts[0]


def part_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if part(target) != part(module):
                edges[part(module)].add(part(target))
    return edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print Graphviz dot instead of text")
    args = parser.parse_args()
    edges = part_graph()
    rank = {name: i for i, name in enumerate(ORDER)}
    names = sorted(set(edges) | {t for ts in edges.values() for t in ts}, key=lambda n: rank.get(n, 99))
    if args.dot:
        print("digraph rearqa {\n  rankdir=TB;")
        for name in names:
            for target in sorted(edges.get(name, ()), key=lambda n: rank.get(n, 99)):
                print(f'  "{name}" -> "{target}";')
        print("}")
        return
    width = max(len(n) for n in names)
    for name in names:
        targets = sorted(edges.get(name, ()), key=lambda n: rank.get(n, 99))
        print(f"{name:<{width}} -> {', '.join(targets) if targets else '(nothing)'}")


if __name__ == "__main__":
    main()
