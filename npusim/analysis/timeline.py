"""A coarse timeline of a window: per row of pipes, the busy fraction of each of `columns` time cells.

Without a core filter a row gathers one pipe kind over all cores (AIC CUBE, AIV VECTOR, ...) and a cell's
value is the mean busy fraction of those pipes; with --core each lane of the chosen cores is a row.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable

from npusim.analysis.window import Window, lane_key, lanes
from npusim.hw.records import OpRecord


def unit_label(unit: str) -> str:
    return "AIC" if unit == "aic" else unit.upper()


def timeline(ops: Iterable[OpRecord], window: Window, columns: int) -> dict[str, Any]:
    cols = max(1, min(columns, window.length))
    edges = [window.lo + window.length * i // cols for i in range(cols + 1)]
    rows: dict[tuple, dict[str, Any]] = {}
    for lane, lane_ops in lanes(ops, window.cores).items():
        core, unit, pipe = lane
        if window.cores is None:
            kind = "AIC" if unit == "aic" else "AIV"
            key, label = (kind, lane_key(lane)[2]), f"{kind} {pipe}"
        else:
            key, label = lane_key(lane), f"c{core} {unit_label(unit)} {pipe}"
        row = rows.setdefault(key, {"label": label, "pipe": pipe, "instances": 0, "busy": [0] * cols})
        row["instances"] += 1
        busy = row["busy"]
        for r in lane_ops:
            s, e = max(r.start, window.lo), min(r.end, window.hi)
            if e <= s:
                continue
            i = bisect.bisect_right(edges, s) - 1
            while i < cols and edges[i] < e:
                busy[i] += min(e, edges[i + 1]) - max(s, edges[i])
                i += 1
    out = []
    for key in sorted(rows):
        row = rows[key]
        n = row["instances"]
        row["busy"] = [round(b / (n * (edges[i + 1] - edges[i])), 3) for i, b in enumerate(row["busy"])]
        out.append(row)
    return {"from": window.lo, "to": window.hi, "columns": cols,
            "cycles_per_column": window.length / cols, "rows": out}
