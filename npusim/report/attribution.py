"""Why was each pipe idle, and what made the run as long as it was: stall attribution and the
critical path, as functions of the op records.

Cause keys name the unit kind and pipe of the op that was busy, and for transfers the byte role:
`aic.cube`, `aiv.vector`, `aic.mte2:weight`, `aiv.mte3:workspace`, ...; plus
- `flag`: the set/wait latency on a data dependency,
- `buffer`: the latency on a slot (write-after-read) dependency, i.e. waiting for a slot to be released,
- `hbm`: the part of a GM transfer's time beyond what its port rate alone would take (bandwidth share).

The critical path starts at the op that ends last and walks back: through the dependency that set the
op's start when it was dependency-bound, else through the previous op on its pipe. Each op on it
contributes its duration and each edge its latency, so the path's causes sum to `cycles`.

An idle interval of a pipe (from the end of its previous op, or cycle 0, to the start of the next) is
attributed by walking the same chain back from the op it waited on: whatever was busy (or in flight as a
flag) during each part of the interval gets that part.
"""

from __future__ import annotations

from collections import defaultdict
from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.hw import costs
from npusim.hw.records import OpRecord


def vector_side(causes: dict[str, int]) -> int:
    """Cycles of a cause map that belong to the vector side: AIV work (`aiv.*`) or a workspace transfer
    (`*:workspace`), the hand-off that dequantization or MSD makes between the AIVs and the AIC. The
    Cube's `waiting_on` vector side is the Vector-Cube stall."""
    return sum(v for k, v in causes.items() if k.startswith("aiv.") or k.endswith(":workspace"))


_CAUSES: dict[tuple, str] = {}  # a handful of distinct keys, asked for once per op walked


def cause_of(r: OpRecord) -> str:
    key = (r.unit == "aic", r.pipe, r.kind == "dma" and r.role)
    cause = _CAUSES.get(key)
    if cause is None:
        unit = f"{'aic' if key[0] else 'aiv'}.{r.pipe.lower()}"
        cause = _CAUSES[key] = f"{unit}:{r.role}" if key[2] else unit
    return cause


def _hbm_excess(cfg: HardwareConfig, r: OpRecord) -> int:
    """Cycles of a transfer beyond its uncontended time: the HBM bandwidth share it had to wait for."""
    if r.level != "hbm":
        return 0
    port = costs.port(cfg, r.path)
    base = port.start_cycles + ceil(r.nbytes / port.rate_bytes_per_cycle)
    if r.path.startswith("gm_"):
        base += cfg.hbm.first_byte_cycles
    return max(0, (r.end - r.start) - base)


class Attribution:
    def __init__(self, cfg: HardwareConfig, records: list[OpRecord]):
        self.cfg = cfg
        self.by_index = {r.index: r for r in records}
        self.prev_on_pipe: dict[int, int] = {}
        lanes: dict[tuple, list[OpRecord]] = defaultdict(list)
        for r in records:
            lanes[(r.core, r.unit, r.pipe)].append(r)
        self.lanes = lanes
        for lane in lanes.values():
            lane.sort(key=lambda r: r.start)
            for a, b in zip(lane, lane[1:]):
                self.prev_on_pipe[b.index] = a.index
        self._excess = {r.index: _hbm_excess(cfg, r) for r in records if r.level == "hbm"}

    def _predecessor(self, r: OpRecord):
        """(op it waited for, edge latency cause) or (None, None) if it started at the pipe's free time
        with nothing to wait for."""
        if r.blocker >= 0 and r.ready >= r.pipe_free:
            return self.by_index[r.blocker], ("buffer" if r.blocker_is_slot else "flag")
        prev = self.prev_on_pipe.get(r.index)
        return (self.by_index[prev], None) if prev is not None else (None, None)

    def blame(self, lo: int, hi: int, r: OpRecord | None, edge: str | None, out: dict[str, int]) -> None:
        """Attribute the interval [lo, hi) to what op r (ended, then `edge` latency) was doing."""
        while r is not None and hi > lo:
            if edge is not None and hi > r.end:
                a = max(lo, r.end)
                out[edge] += hi - a
                hi = a
            # r's own execution: its pipe's work, then the part beyond its uncontended time, if any, as "hbm"
            excess = self._excess.get(r.index, 0)
            mid = r.end - excess
            a, b = max(lo, r.start), min(hi, mid)
            if b > a:
                out[cause_of(r)] += b - a
            if excess:
                a, b = max(lo, mid), min(hi, r.end)
                if b > a:
                    out["hbm"] += b - a
            hi = min(hi, r.start)
            r, edge = self._predecessor(r)
        if hi > lo:
            out["start"] += hi - lo  # before the first op of the chain (never for a run starting at 0)

    def critical_path(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        last = max(self.by_index.values(), key=lambda r: (r.end, -r.index))
        self.blame(0, last.end, last, None, out)
        return _sorted(out)

    def waiting_on(self, steady: bool = False) -> dict[str, dict[str, int]]:
        """Per pipe kind ("cube", "mte2", ...): idle cycles of its instances by cause.

        steady=True leaves out each pipe's fill (the idle time before its first op), keeping only the
        stalls between ops: the steady-state view DESIGN.md's stall claims are about."""
        per_pipe: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (core, unit, pipe), lane in self.lanes.items():
            out = per_pipe[pipe.lower()]
            free = 0
            for n, r in enumerate(lane):
                if r.start > free and not (steady and n == 0):
                    pred, edge = (self.by_index[r.blocker], "buffer" if r.blocker_is_slot else "flag") \
                        if r.blocker >= 0 else (None, None)
                    self.blame(free, r.start, pred, edge, out)
                free = r.end
        return {pipe: _sorted(v) for pipe, v in per_pipe.items()}


def _sorted(d: dict[str, int]) -> dict[str, int]:
    return dict(sorted(((k, v) for k, v in d.items() if v), key=lambda kv: (-kv[1], kv[0])))
