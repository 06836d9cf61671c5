"""The part of a run a command looks at: a cycle window and a set of cores, checked against the trace.

Lanes are the in-order pipes of the machine, keyed (core, unit, pipe) and ordered as Ascend's pipeline
view lists them: core, then AIC before AIV0 before AIV1, then MTE2, MTE1, CUBE, FIXP / MTE2, VECTOR, MTE3.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from npusim.analysis.tracefile import TraceRun
from npusim.errors import NpusimError
from npusim.graph.ops import PIPES_OF, UnitKind
from npusim.hw.records import OpRecord

Lane = tuple[int, str, str]  # (core, unit, pipe)


@dataclass(frozen=True)
class Window:
    lo: int
    hi: int
    cores: tuple[int, ...] | None  # None: every core

    @property
    def length(self) -> int:
        return self.hi - self.lo

    def is_whole_run(self, cycles: int) -> bool:
        return self.cores is None and self.lo == 0 and self.hi >= cycles

    def as_dict(self) -> dict:
        return {"from": self.lo, "to": self.hi, "cycles": self.length,
                "cores": None if self.cores is None else list(self.cores)}


def _ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5', for messages."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def make_window(run: TraceRun, cores: Sequence[int] | None = None, lo: int | None = None,
                hi: int | None = None) -> Window:
    """Check --core / --from / --to against the trace. `hi` beyond the makespan is cut to it."""
    lo = 0 if lo is None else lo
    hi = run.cycles if hi is None else min(hi, run.cycles)
    if lo < 0:
        raise NpusimError(f"--from {lo}: cycles start at 0")
    if lo >= run.cycles:
        raise NpusimError(f"--from {lo}: the run ends at cycle {run.cycles}")
    if lo >= hi:
        raise NpusimError(f"--from {lo} must be below --to {hi} (cycles)")
    if not cores:
        return Window(lo, hi, None)
    present = run.cores_with_ops()
    missing = sorted(set(cores) - set(present))
    if missing:
        raise NpusimError(f"--core {missing[0]}: no op ran on that core in {run.path} "
                          f"(cores with ops: {_ranges(present)})")
    return Window(lo, hi, tuple(sorted(set(cores))))


def _pipe_rank(unit: str, pipe: str) -> int:
    kind = UnitKind.AIC if unit == "aic" else UnitKind.AIV
    return [p.value for p in PIPES_OF[kind]].index(pipe)


def lane_key(lane: Lane) -> tuple:
    core, unit, pipe = lane
    return core, unit, _pipe_rank(unit, pipe)


def lanes(ops: Iterable[OpRecord], cores: tuple[int, ...] | None = None) -> dict[Lane, list[OpRecord]]:
    """Ops of the chosen cores per lane, each lane sorted by start, lanes in pipeline-view order."""
    out: dict[Lane, list[OpRecord]] = defaultdict(list)
    for r in ops:
        if cores is None or r.core in cores:
            out[(r.core, r.unit, r.pipe)].append(r)
    for lane in out.values():
        lane.sort(key=lambda r: r.start)
    return {k: out[k] for k in sorted(out, key=lane_key)}


def clipped(ops: Iterable[OpRecord], window: Window) -> list[OpRecord]:
    """The chosen cores' ops cut to the window (ops wholly outside it dropped), for busy-time sums."""
    out = []
    for r in ops:
        if window.cores is not None and r.core not in window.cores:
            continue
        s, e = max(r.start, window.lo), min(r.end, window.hi)
        if e > s:
            out.append(r if (s, e) == (r.start, r.end) else r._replace(start=s, end=e))
    return out
