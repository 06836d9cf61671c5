"""Flat records the hardware layer publishes: one per completed op, one per write-back.

Exporters (trace, reports) are functions of these records; the hardware layer knows nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class OpRecord(NamedTuple):
    """One completed op. Times are in cycles.

    A named tuple rather than a frozen dataclass: equally immutable, and several times cheaper to
    create, which matters at one record per simulated op. The fields that come from the graph come
    first, so the machine builds a record as one precomputed tuple plus the run's fields.

    ready: the cycle at which all its dependencies (with flag latencies) were satisfied.
    pipe_free: the cycle at which the previous op on the same pipe ended (0 for the first).
    start = max(ready, pipe_free). blocker: the op index whose end (+ latency) set `ready`, or -1.
    blocker_is_slot: that dependency was a buffer-slot (write-after-read) wait.
    level: for GM transfers, where the bytes were served from / written to: "hbm" or "l2".
    """

    # what the op is (from the graph)
    index: int
    name: str
    core: int
    unit: str
    pipe: str
    kind: str
    path: str  # "" unless a DMA
    nbytes: int
    role: str
    macs: int
    dtype: str
    vop: str
    elements: int
    # what happened to it in the run
    start: int
    end: int
    ready: int
    pipe_free: int
    blocker: int
    blocker_is_slot: bool
    latency: int  # flag latency on the blocking edge (cycles)
    level: str

    @property
    def duration(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class WritebackRecord:
    """Dirty L2 bytes written to HBM: at eviction (`cycle` = when) or at the end-of-kernel flush."""

    cycle: int
    nbytes: int
    role: str
    cause: str  # "evict" | "flush" | "bypass" (a write larger than L2)


@dataclass
class Recorder:
    """The default sink: keeps every record in memory, in completion order."""

    ops: list[OpRecord] = field(default_factory=list)
    writebacks: list[WritebackRecord] = field(default_factory=list)

    def op(self, rec: OpRecord) -> None:
        self.ops.append(rec)

    def writeback(self, rec: WritebackRecord) -> None:
        self.writebacks.append(rec)
