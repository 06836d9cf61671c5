"""Sweep grids: `--grid NAME=V1,V2,...` axes over kernel options (m, k, n, cores, ...) and config fields
(hbm.bandwidth, l2.enabled, dma.ub_to_l1, ...), checked before anything runs.

A name without a dot is a kernel option; a dotted name is a config field, checked against the schema
(so a typo fails at once, not as 100 failed points). Values are split on commas outside quotes and
braces, so an inline table such as `{rate_bytes_per_cycle = 128, start_cycles = 100}` is one value.
"""

from __future__ import annotations

import itertools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import BaseModel

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.kernels.registry import KernelSpec


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[str, ...]  # as written; config values are read like --set values

    @property
    def is_config(self) -> bool:
        return "." in self.name

    @property
    def column(self) -> str:
        return f"grid.{self.name}"


def split_values(text: str) -> list[str]:
    """'1,4,16' -> ['1', '4', '16']; commas inside {}, [] or quotes do not split."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The config section type of a field (also inside `Port | None`), or None for a value."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def check_config_path(name: str) -> None:
    """Raise if `name` (e.g. 'hbm.bandwidth') is not a field of the hardware config schema."""
    parts = name.split(".")
    model: type[BaseModel] = HardwareConfig
    for i, part in enumerate(parts):
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        here = ".".join(parts[: i + 1])
        field = fields.get(part)
        if field is None:
            where = f"section {'.'.join(parts[:i])}" if i else "the config"
            raise NpusimError(f"--grid {name}: unknown config field {here} "
                              f"({where} has: {', '.join(fields)})")
        rest = parts[i + 1:]
        sub = _submodel(field.annotation)
        if sub is not None:
            model = sub
            continue
        if typing.get_origin(field.annotation) is dict and len(rest) <= 1:
            return  # a table keyed by dtype or vector op: any key, checked when the config loads
        if rest:
            raise NpusimError(f"--grid {name}: {here} is a value, not a section")
        return


def parse_axis(spec: str, kernel: KernelSpec) -> Axis:
    name, sep, raw = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise NpusimError(f"--grid {spec!r}: expected NAME=V1,V2,..., e.g. --grid m=1,4,16 "
                          f"or --grid hbm.bandwidth=\"0.8 TB/s,1.6 TB/s\"")
    if name == "method":
        raise NpusimError("--grid method=...: choose methods with --method (default: every method "
                          "the preset supports)")
    if "." in name:
        check_config_path(name)
    elif name not in kernel.options:
        options = ", ".join(o for o in kernel.options if o != "method")
        raise NpusimError(f"--grid {name}: unknown field: not a {kernel.name} option ({options}), and a "
                          f"config field is written section.field (e.g. hbm.bandwidth)")
    values = split_values(raw)
    if any(v == "" for v in values):
        raise NpusimError(f"--grid {spec!r}: empty value (values are separated by commas)")
    if len(set(values)) != len(values):
        raise NpusimError(f"--grid {name}: a value is listed twice")
    return Axis(name, tuple(values))


def parse_grid(specs: Iterable[str], kernel: KernelSpec) -> tuple[Axis, ...]:
    axes = tuple(parse_axis(s, kernel) for s in specs)
    if not axes:
        raise NpusimError("sweep: give at least one --grid NAME=V1,V2,...")
    names = [a.name for a in axes]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise NpusimError(f"--grid {dup}: given twice")
    required = [o for o in kernel.options if o not in kernel.defaults and o != "method"]
    missing = [o for o in required if o not in names]
    if missing:
        raise NpusimError(f"sweep of {kernel.name} needs option(s) {', '.join(missing)}: give each with "
                          f"--grid (one value is fine, e.g. --grid {missing[0]}=1024)")
    return axes


def grid_points(axes: tuple[Axis, ...]) -> list[tuple[str, ...]]:
    """Every combination of values, the first axis varying slowest (the order rows are written in)."""
    return list(itertools.product(*(a.values for a in axes)))


def option_value(raw: str) -> Any:
    """Kernel option values from the grid: integers as int, anything else as written."""
    return int(raw) if re.fullmatch(r"[+-]?[0-9]+", raw) else raw
