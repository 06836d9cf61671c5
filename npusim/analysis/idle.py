"""Idle intervals of a pipe (stalls) and what they were waiting on.

A stall is the gap on one lane between the end of an op (or cycle 0) and the start of the next op. Its
causes come from npusim.report.attribution: `Attribution.blame` walks back from the op the next op
waited on, exactly as `Attribution.waiting_on` does for the whole run; here the gap can be cut to a
window, and split in time for drawing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from npusim.analysis.window import Lane, Window
from npusim.hw.records import OpRecord
from npusim.report.attribution import Attribution


@dataclass(frozen=True)
class Gap:
    lane: Lane
    start: int  # cut to the window
    end: int
    before: OpRecord | None  # the op that ended last on this lane before the gap (None: lane start)
    after: OpRecord  # the op that starts when the gap ends

    @property
    def cycles(self) -> int:
        return self.end - self.start


def lane_gaps(lane: Lane, ops: list[OpRecord], window: Window) -> Iterator[Gap]:
    """Gaps of one lane (ops sorted by start) that overlap the window, cut to it. Idle time after the
    lane's last op is not a gap: nothing was waiting."""
    free, before = 0, None
    for r in ops:
        lo, hi = max(free, window.lo), min(r.start, window.hi)
        if hi > lo:
            yield Gap(lane, lo, hi, before, r)
        free, before = r.end, r
        if free >= window.hi:
            break


def waited_on(att: Attribution, r: OpRecord) -> tuple[OpRecord | None, str | None]:
    """The op r's start waited for and the latency kind of that edge, as Attribution.waiting_on reads it."""
    if r.blocker < 0:
        return None, None
    return att.by_index[r.blocker], "buffer" if r.blocker_is_slot else "flag"


def gap_causes(att: Attribution, gap: Gap, lo: int | None = None, hi: int | None = None) -> dict[str, int]:
    """Cycles of the gap (or of its part [lo, hi)) by cause."""
    pred, edge = waited_on(att, gap.after)
    out: dict[str, int] = defaultdict(int)
    att.blame(gap.start if lo is None else lo, gap.end if hi is None else hi, pred, edge, out)
    return dict(out)


def cause_spans(att: Attribution, gap: Gap, step: int) -> list[tuple[int, int, str]]:
    """The gap cut into pieces of about `step` cycles, each labelled with the cause that held most of
    it, adjacent pieces of one cause merged: (start, end, cause), for drawing idle time by cause."""
    spans: list[tuple[int, int, str]] = []
    for a in range(gap.start, gap.end, max(1, step)):
        b = min(gap.end, a + max(1, step))
        causes = gap_causes(att, gap, a, b)
        cause = min(causes.items(), key=lambda kv: (-kv[1], kv[0]))[0] if causes else "start"
        if spans and spans[-1][2] == cause and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b, cause)
        else:
            spans.append((a, b, cause))
    return spans


def sorted_causes(d: dict[str, int]) -> dict[str, int]:
    """Largest first, then by name; zero entries dropped (the order npusim.report uses)."""
    return dict(sorted(((k, v) for k, v in d.items() if v), key=lambda kv: (-kv[1], kv[0])))
