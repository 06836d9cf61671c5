"""Sweep rows as a CSV file: one row per point, every cell a string, columns in a fixed order.

Column groups, in order (docs/inspect.md lists every one):
  identity  point, kernel, method, hw, overrides, seed, check_numerics
  grid.*    the value of each grid axis at this point, as written, in the order the axes were given
  opt.*     every kernel option the point ran with (defaults filled in), alphabetical
  results   the run JSON's scalar fields, flattened (cycles, time_us, achieved_tflops first, then
            alphabetical: units.cube.busy_cycles, traffic.by_role.weight.hbm_read_bytes, meta.*, ...)
  config.*  the full resolved hardware config, flattened, alphabetical
  error     empty if the point ran; else the one-line reason
A column exists when some row has it; rows lacking it get an empty cell. The order is a function of
the set of columns alone, so rows that finished in any order, on any machine, give the same file.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from npusim.errors import NpusimError
from npusim.io import atomic_write_text

IDENTITY = ("point", "kernel", "method", "hw", "overrides", "seed", "check_numerics")
HEADLINE = ("cycles", "time_us", "achieved_tflops")
ERROR = "error"

Row = dict[str, str]


def cell(value: Any) -> str:
    """TOML-like spelling for booleans; repr for floats (shortest exact round trip); '' for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _group(col: str, axis_columns: Sequence[str]) -> tuple:
    if col in IDENTITY:
        return (0, IDENTITY.index(col))
    if col in axis_columns:
        return (1, list(axis_columns).index(col))
    if col == ERROR:
        return (6,)
    if col.startswith("grid."):
        return (1, len(axis_columns), col)
    if col.startswith("opt."):
        return (2, col)
    if col.startswith("config."):
        return (5, col)
    if col in HEADLINE:
        return (3, HEADLINE.index(col))
    return (4, col)


def columns(rows: Iterable[Row], axis_columns: Sequence[str]) -> list[str]:
    names = set(IDENTITY) | set(axis_columns) | {ERROR}
    for row in rows:
        names.update(row)
    return sorted(names, key=lambda c: _group(c, axis_columns))


def csv_text(rows: Sequence[Row], axis_columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows, axis_columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_rows(path: str | Path, rows: Sequence[Row], axis_columns: Sequence[str]) -> None:
    # The whole file is rewritten and renamed over the old one: a reader or a crash never sees half.
    atomic_write_text(path, csv_text(rows, axis_columns))


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a sweep CSV written by npusim; every header column is a key of every row."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NpusimError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NpusimError(f"{p}: cannot read: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in (*IDENTITY, ERROR) if c not in header]
    if missing:
        raise NpusimError(f"{p}: not a sweep CSV written by npusim sweep (no column {missing[0]})")
    rows = []
    for n, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise NpusimError(f"{p}, line {n}: the row does not have {len(header)} cells")
        rows.append(row)
    return rows
