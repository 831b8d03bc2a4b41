"""Registries map names to lazy "module:attr" import paths (STYLE rule 3).

`resolve` imports the named entry on first use, so registering a heavy class (torch, peft,
FAISS) costs nothing until it is asked for; an unknown name is an error listing the valid ones.
An entry may also be the object itself (a test registering a class it defines, say).
"""
from __future__ import annotations

import importlib
from typing import Any


def load(target: Any) -> Any:
    """The object at "package.module:attr" (an entry that is not a string is the object itself)."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve(registry: dict[str, str], name: str, what: str, error: type[Exception] = ValueError) -> Any:
    """The object registered as `name`; `what` names the kind in the error ("reader engine")."""
    try:
        target = registry[name]
    except (KeyError, TypeError):
        noun = what.split()[-1]
        raise error(f"unknown {what} {name!r}; valid {noun}s are {list(registry)}") from None
    return load(target)


def lazy_attributes(package: str, table: dict[str, str]):
    """A module `__getattr__` that imports each name of `table` on first use.

    `table` maps a public name to "package.module:attr", or to "package.module" where the
    attribute has the public name. Packages use it so that importing them stays light (no torch
    until a name that needs it is asked for)."""
    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = table[name]
        return load(target if ":" in target else f"{target}:{name}")
    return __getattr__
