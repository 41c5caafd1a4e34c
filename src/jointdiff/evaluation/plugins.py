"""Resolve pluggable factories named by "module:function" strings (no import-time registration)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def resolve(table: Mapping[str, str], name: str, kind: str) -> Callable[..., Any]:
    """The factory that ``table[name]`` ("module:function") names; ValueError lists the choices."""
    spec = table.get(name)
    if spec is None:
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(table))}")
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)
