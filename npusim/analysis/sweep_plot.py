"""The default sweep plot: speedup of B over A (by default method msd over method dequant) at every
grid point where both ran, drawn across the two most varied grid axes: the most varied on the x axis,
one line per value of the next (and of any other axis that varies).

Speedup = metric(A) / metric(B) with the metric a time (cycles by default), so > 1 means B is faster.
`by` may also be a grid axis, to compare two values of it: --by l2.enabled --a false --b true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from matplotlib.figure import Figure

from npusim.analysis.figures import new_figure
from npusim.analysis.table import ERROR, Row
from npusim.errors import NpusimError


@dataclass(frozen=True)
class Speedup:
    by: str
    a: str
    b: str
    metric: str
    x_axis: str | None  # None: a single point (no axis varies)
    x_values: list[str]
    series_axes: list[str]
    series: dict[str, list[float | None]]  # line label -> speedup per x value (None: no pair there)


def _by_column(by: str, header: Sequence[str]) -> str:
    col = by if by == "method" or by.startswith("grid.") else f"grid.{by}"
    if col not in header:
        axes = [c[5:] for c in header if c.startswith("grid.")]
        raise NpusimError(f"--by {by}: the sweep has no such column (compare by method or by a grid "
                          f"axis: {', '.join(axes)})")
    return col


def _number(row: Row, metric: str) -> float:
    try:
        return float(row[metric])
    except ValueError:
        raise NpusimError(f"--metric {metric}: not a number at point {row['point']} ({row[metric]!r})") from None


def speedup_table(rows: Sequence[Row], by: str = "method", a: str = "dequant", b: str = "msd",
                  metric: str = "cycles") -> Speedup:
    if not rows:
        raise NpusimError("the sweep CSV has no rows")
    header = list(rows[0])
    by_col = _by_column(by, header)
    if metric not in header:
        raise NpusimError(f"--metric {metric}: no such column in the sweep (e.g. cycles, time_us)")
    ok = [r for r in rows if not r[ERROR]]
    present = list(dict.fromkeys(r[by_col] for r in ok))
    for side, value in (("--a", a), ("--b", b)):
        if value not in present:
            raise NpusimError(
                f"{side} {value}: the sweep has no finished rows with {by_col}={value} (it has: "
                f"{', '.join(present) or 'none'}); choose --a/--b among those, or compare two values of a "
                f"grid axis, e.g. --by hbm.bandwidth --a \"1.6 TB/s\" --b \"3.2 TB/s\"")
    dims = [c for c in header if c.startswith("grid.") and c != by_col]
    if by_col != "method":
        dims.append("method")
    side_a = {tuple(r[d] for d in dims): r for r in ok if r[by_col] == a}
    pairs = [(key, side_a[key], r) for r in ok if r[by_col] == b
             for key in [tuple(r[d] for d in dims)] if key in side_a]
    if not pairs:
        raise NpusimError(f"no grid point has both {by_col}={a} and {by_col}={b} finished")
    distinct = {d: list(dict.fromkeys(key[i] for key, _, _ in pairs)) for i, d in enumerate(dims)}
    varied = sorted((d for d in dims if len(distinct[d]) > 1), key=lambda d: (-len(distinct[d]), dims.index(d)))
    x_axis = varied[0] if varied else None
    x_values = distinct[x_axis] if x_axis else [""]
    series_axes = varied[1:]
    series: dict[str, list[float | None]] = {}
    for key, ra, rb in pairs:
        fields = dict(zip(dims, key))
        label = ", ".join(f"{_name(d)}={fields[d]}" for d in series_axes) or f"{_name(by_col)} {b} vs {a}"
        line = series.setdefault(label, [None] * len(x_values))
        denominator = _number(rb, metric)
        line[x_values.index(fields[x_axis]) if x_axis else 0] = \
            _number(ra, metric) / denominator if denominator else None
    return Speedup(_name(by_col), a, b, metric, _name(x_axis) if x_axis else None, x_values,
                   [_name(d) for d in series_axes], series)


def _name(col: str) -> str:
    return col[5:] if col.startswith("grid.") else col


def speedup_figure(s: Speedup, title: str = "") -> Figure:
    fig = new_figure(9, 5.5)
    ax = fig.add_subplot()
    xs = list(range(len(s.x_values)))
    for label, values in s.series.items():
        pts = [(x, v) for x, v in zip(xs, values) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(1.0, color="#7f7f7f", linestyle="--", linewidth=1, label="no speedup (1.0)")
    ax.set_xticks(xs)
    ax.set_xticklabels(s.x_values if s.x_axis else ["(single point)"])
    ax.set_xlabel(s.x_axis or "grid point")
    ax.set_ylabel(f"speedup of {s.by}={s.b} over {s.by}={s.a}\n({s.metric} of {s.a} / {s.metric} of {s.b})")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"speedup of {s.b} over {s.a}")
    ax.legend(title=", ".join(s.series_axes) or None, fontsize="small")
    return fig
