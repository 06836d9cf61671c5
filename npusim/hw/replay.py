"""Numerics after timing: run every op's computation at the simulated cycles the machine gave it.

Values never change a duration, so the machine times the graph first and the datapath replays it after:
each op reads its inputs at its start cycle and writes its outputs at its end cycle. Events are taken in
(cycle, ends before starts, op index) order, so a result that lands at cycle t is visible to an op
starting at t, and a tile overwritten before its reader starts is read overwritten, as on the hardware.
"""

from __future__ import annotations

from typing import Sequence

from npusim.graph.ops import Op
from npusim.hw.datapath import Datapath

_END, _START, _END_OF_EMPTY = 0, 1, 2


def replay(datapath: Datapath, ops: Sequence[Op], start: Sequence[int], end: Sequence[int]) -> None:
    events = []
    for i, op in enumerate(ops):
        if op.compute is None:
            continue
        s, e = start[i], end[i]
        events.append((s, _START, i))
        # a zero-length op ends after it starts, not before
        events.append((e, _END if e > s else _END_OF_EMPTY, i))
    events.sort()
    pending = {}
    for _, kind, i in events:
        if kind == _START:
            pending[i] = datapath.begin(ops[i])
        else:
            datapath.commit(ops[i], pending.pop(i))
