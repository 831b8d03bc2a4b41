"""Atomic file writes: a reader, or a run killed half-way, never sees a half-written file.

Every write goes to a temp file in the target's own folder (so the final `os.replace` is a rename
on one file system), is flushed to disk, and only then replaces the target.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` to fill a temp file beside `path`, fsync it, then rename it onto `path`.

    The temp file is removed if `write` raises; `path` is then left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are shared data files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Write the strings in `lines` (each with its own line ending) as UTF-8 text."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_lines(path, [text])


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_json_object(path: str | Path, fix: str = "") -> dict:
    """The JSON object in `path`; a ConfigError naming the file (and `fix`, what to do about it)
    when it is unreadable, not JSON, or not an object."""
    import json

    from rearqa.config_errors import ConfigError

    hint = f"; {fix}" if fix else ""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}){hint}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object{hint}")
    return data
