#!/usr/bin/env python3
"""Park the tracked paths no GPU unit reads, so the tree every device call sends stays small.

A device call sends the checkout's tracked files with every call, beside what it carries, within
64 MiB in all. The shipped checkpoints (13 MiB each) and the committed results grow with each
session, and every MiB of them is a MiB less for the parts that carry the model and data (more
staging calls). No GPU unit reads them: the units train, choose and evaluate their own
checkpoints. So, here, for the length of a loan:

    python scripts/gpu_park.py park      # move them into .gpu/parked/ (git-ignored), print the tree
    python scripts/gpu_stage.py build    # parts sized for the parked tree
    ... the device calls ...
    python scripts/gpu_park.py unpark    # put them back (before any commit)

`status` says what is parked. Parking never overwrites: a path already parked, or a parked path
whose place is taken again, is refused with a message and nothing is moved.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PARKED = Path(".gpu/parked")
PATHS = ("checkpoints", "docs/results", "docs/figures")  # read by no unit on the GPU machine
MIB = 1 << 20


def tree_mib(root: Path) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_stage import travelling_tree_bytes

    return travelling_tree_bytes(root) / MIB


def park(root: Path) -> None:
    before = tree_mib(root)
    clash = [p for p in PATHS if (root / PARKED / p).exists()]
    if clash:
        sys.exit(f"park: already parked: {clash} (unpark first)")
    for p in PATHS:
        if (root / p).exists():
            (root / PARKED / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(root / p, root / PARKED / p)
    print(f"parked {', '.join(PATHS)} in {PARKED}: the tree sent with each call is "
          f"{tree_mib(root):.1f} MiB (was {before:.1f}); unpark before committing")


def unpark(root: Path) -> None:
    clash = [p for p in PATHS if (root / PARKED / p).exists() and (root / p).exists()]
    if clash:
        sys.exit(f"unpark: {clash} exist in the tree and in {PARKED}: move one away by hand")
    moved = []
    for p in PATHS:
        if (root / PARKED / p).exists():
            (root / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(root / PARKED / p, root / p)
            moved.append(p)
    print(f"unparked {', '.join(moved) or 'nothing'}; the tree is {tree_mib(root):.1f} MiB")


def status(root: Path) -> None:
    parked = [p for p in PATHS if (root / PARKED / p).exists()]
    print(f"parked: {', '.join(parked) or 'nothing'}; the tree is {tree_mib(root):.1f} MiB")


def main(argv: list[str]) -> None:
    commands = {"park": park, "unpark": unpark, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        sys.exit(f"usage: gpu_park.py {{{'|'.join(commands)}}}")
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                               capture_output=True, text=True).stdout.strip())
    commands[argv[0]](root)


if __name__ == "__main__":
    main(sys.argv[1:])
