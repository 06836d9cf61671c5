"""Buffer occupancy over time, derived from op records and the slots ops read and write.

A slot holds live data from the start of the op that writes it until the end of the last op that reads
that version (or the end of the writer, if nothing reads it). Occupancy of a buffer is the sum of the
bytes of its slots holding live data.
"""

from __future__ import annotations

from collections import defaultdict

from npusim.graph.kernel_graph import KernelGraph
from npusim.hw.records import OpRecord


def slot_lifetimes(graph: KernelGraph, records: list[OpRecord]) -> dict[str, list[tuple[int, int]]]:
    """slot -> [(from_cycle, to_cycle)] live intervals, in time order."""
    ops = graph.ops
    # kind: 0 = reads the slot, 1 = overwrites it (a new version), 2 = updates it in place (reads + writes)
    events: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for r in records:
        op = ops[r.index]
        for s in op.writes:
            events[s].append((r.start, r.end, 2 if s in op.reads else 1))
        for s in op.reads:
            if s not in op.writes:
                events[s].append((r.start, r.end, 0))
    lives: dict[str, list[tuple[int, int]]] = {}
    for slot, evs in events.items():
        evs.sort()
        out: list[list[int]] = []
        for start, end, kind in evs:
            if kind == 1 or not out:
                out.append([start, end])
            else:
                out[-1][1] = max(out[-1][1], end)
        lives[slot] = [(a, b) for a, b in out]
    return lives


def buffer_occupancy(graph: KernelGraph, records: list[OpRecord]) -> dict[tuple, list[tuple[int, int]]]:
    """(core, unit, buffer) -> [(cycle, bytes)] step series, starting at 0 bytes."""
    deltas: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for slot_name, lives in slot_lifetimes(graph, records).items():
        slot = graph.slots[slot_name]
        key = (slot.unit.core, slot.unit.name, slot.buffer.value)
        for a, b in lives:
            deltas[key][a] += slot.nbytes
            deltas[key][b] -= slot.nbytes
    series = {}
    for key, d in deltas.items():
        level, points = 0, [(0, 0)]
        for t in sorted(d):
            if d[t] == 0:
                continue
            level += d[t]
            points.append((t, level))
        series[key] = points
    return series
