"""A trace file opened for analysis: the run's config, op records and write-backs, from the file alone.

Nothing here needs the machine that wrote the trace: the config and every record field travel in the
file (npusim.trace.read), so a trace from another machine gives the same reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.hw.records import OpRecord, WritebackRecord
from npusim.trace.read import load_trace, trace_config, trace_records


@dataclass(frozen=True)
class TraceRun:
    path: str
    cfg: HardwareConfig
    ops: list[OpRecord]
    writebacks: list[WritebackRecord]
    cycles: int
    graph: str
    seed: int
    kernel: dict[str, Any] = field(default_factory=dict)  # the graph's meta: kernel, shape, method, tiling

    @property
    def clock_hz(self) -> float:
        return self.cfg.chip.clock_hz

    @property
    def hw(self) -> str:
        return self.cfg.meta.name

    def cores_with_ops(self) -> list[int]:
        return sorted({r.core for r in self.ops})


def open_trace(path: str | Path) -> TraceRun:
    doc = load_trace(path)
    meta = doc["metadata"]
    ops, writebacks = trace_records(doc)
    if not ops:
        raise NpusimError(f"{path}: the trace holds no ops, nothing to analyse")
    # Records stay in file order (the live run's completion order), so attribution sees exactly the
    # sequence the run's own report saw.
    return TraceRun(path=str(path), cfg=trace_config(doc), ops=ops, writebacks=writebacks,
                    cycles=int(meta["makespan_cycles"]), graph=str(meta.get("graph", "")),
                    seed=int(meta.get("seed", 0)), kernel=dict(meta.get("kernel") or {}))
