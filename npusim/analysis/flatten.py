"""Nested dicts (a resolved config, a run JSON) as flat `a.b.c` keys, for CSV columns and diffs."""

from __future__ import annotations

from typing import Any, Mapping


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
