"""Metadata filters: a dict of equality conditions, turned into SQL over the docstore's chunks.

    {"source": "/data/a.pdf"}           chunks of that source (a path is also matched resolved)
    {"title": "Hamlet"}                 chunks whose document title is exactly "Hamlet"
    {"id": "wiki-1a2b3c4d"}             that chunk id
    {"tags": "physics"}                 metadata key "tags" equals "physics" or is a list containing it
    {"topic": ["art", "music"]}         a list value means any of them
    {"year": 1603, "tags": "x"}         several keys must all match

Keys other than source/title/id look up the chunk's metadata (JSONL extra keys, tags, PDF page).
Values are strings, numbers or booleans, or non-empty lists of them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rearqa.retriever.errors import FilterError

COLUMN_KEYS = {"source": "c.source", "title": "c.title", "id": "c.chunk_id"}
KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"  # also the HTTP API's schema for filter keys
_KEY = re.compile(KEY_PATTERN)
Scalar = str | int | float | bool


SQL_INT_MIN, SQL_INT_MAX = -(2**63), 2**63 - 1


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalize_filters(filters: Mapping[str, Any] | None) -> dict[str, tuple[Scalar, ...]]:
    """Validate `filters`; every value becomes a tuple of accepted scalars."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise FilterError(f"filters={filters!r}: expected a mapping such as {{'tags': 'physics'}}")
    out: dict[str, tuple[Scalar, ...]] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise FilterError(f"filter key {key!r}: use a metadata key of letters, digits, '_', '-' or '.'")
        values = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        if not values:
            raise FilterError(f"filter {key!r}: the list of accepted values is empty")
        for v in values:
            if v is None or not isinstance(v, (str, int, float, bool)):
                raise FilterError(f"filter {key}={v!r}: values must be strings, numbers or booleans "
                                  "(or a list of them)")
            if isinstance(v, int) and not isinstance(v, bool) and not SQL_INT_MIN <= v <= SQL_INT_MAX:
                raise FilterError(f"filter {key}={v}: integers must fit in 64 bits (SQLite's range)")
            if isinstance(v, str) and not _is_unicode(v):
                raise FilterError(f"filter {key}={v!r}: the value is not valid Unicode text (a lone surrogate)")
        if key == "source":  # a relative or ~ path given by a user also matches its stored form
            values += tuple(str(Path(v).expanduser().resolve()) for v in values if isinstance(v, str))
        out[key] = tuple(dict.fromkeys(values))
    return out


def filter_sql(filters: Mapping[str, tuple[Scalar, ...]]) -> tuple[str, list[Any]]:
    """(`WHERE`-clause body over chunks aliased `c`, parameters); "1" when there is no filter."""
    clauses, params = [], []
    for key, values in filters.items():
        marks = ", ".join("?" * len(values))
        if key in COLUMN_KEYS:
            clauses.append(f"{COLUMN_KEYS[key]} IN ({marks})")
        else:
            # json_each over a scalar yields that scalar and over an array its elements, so one
            # clause covers "equals" and "list contains"; a missing key yields no rows.
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(c.metadata, ?) j WHERE j.value IN ({marks}))")
            params.append(f'$."{key}"')
        params.extend(int(v) if isinstance(v, bool) else v for v in values)
    return (" AND ".join(clauses) or "1"), params
