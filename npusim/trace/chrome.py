"""Chrome trace-event JSON (Perfetto UI, chrome://tracing, MindStudio Insight) from op records.

Conventions (DESIGN.md section 7):
- one process per unit (each core's AIC and each AIV), one thread per pipe, named like Ascend's
  pipeline view (MTE2, MTE1, CUBE, FIXP / MTE2, VECTOR, MTE3); a process "memory" carries HBM/L2 counters;
- one `X` event per op; `C` counters for buffer occupancy and HBM/L2 bandwidth; `s`/`f` flow pairs for
  dependencies that cross pipes or units;
- time base: 1 cycle = 1 ns, so ts/dur (microseconds in the file) = cycles / 1000, and Perfetto shows raw
  cycle counts as nanoseconds. The clock and this convention are in the top-level `metadata`.
Events are written one per line, streamed to the file, so large traces need no in-memory document.
"""

from __future__ import annotations

import json
from typing import IO, Any, Iterable, Iterator

from npusim import __version__
from npusim.config.schema import HardwareConfig
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import PIPES_OF, UnitKind
from npusim.hw.records import OpRecord, WritebackRecord
from npusim.io import atomic_open
from npusim.trace.occupancy import buffer_occupancy

TIME_BASE = "1 cycle = 1 ns: ts and dur are cycles / 1000 (microseconds); Perfetto shows cycles as ns"
MEMORY_PID = 1
BANDWIDTH_BINS = 400


def _us(cycles: int) -> float:
    return cycles / 1000


def unit_pid(core: int, unit: str) -> int:
    """pid 1 is the memory process; core c's AIC is 2 + 8c, its AIV i is 3 + 8c + i."""
    return 2 + 8 * core + (0 if unit == "aic" else 1 + int(unit[3:]))


def pipe_tid(unit: str, pipe: str) -> int:
    kind = UnitKind.AIC if unit == "aic" else UnitKind.AIV
    return 1 + [p.value for p in PIPES_OF[kind]].index(pipe)


def trace_metadata(cfg: HardwareConfig, graph: KernelGraph, cycles: int, seed: int) -> dict[str, Any]:
    return {
        "generator": f"npusim {__version__}",
        "time_base": TIME_BASE,
        "cycle_ns": 1,
        "clock_hz": cfg.chip.clock_hz,
        "makespan_cycles": cycles,
        "seed": seed,
        "kernel": graph.meta,
        "graph": graph.name,
        "config": cfg.to_data(),
    }


def _name_events(records: list[OpRecord]) -> Iterator[dict]:
    seen_units = sorted({(r.core, r.unit) for r in records})
    for core, unit in seen_units:
        pid = unit_pid(core, unit)
        label = "AIC" if unit == "aic" else f"AIV{unit[3:]}"
        yield {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"core {core} {label}"}}
        yield {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}
        kind = UnitKind.AIC if unit == "aic" else UnitKind.AIV
        for pipe in PIPES_OF[kind]:
            tid = pipe_tid(unit, pipe.value)
            yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": pipe.value}}
            yield {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}}
    yield {"ph": "M", "name": "process_name", "pid": MEMORY_PID, "tid": 0, "args": {"name": "memory (HBM, L2)"}}
    yield {"ph": "M", "name": "process_sort_index", "pid": MEMORY_PID, "tid": 0, "args": {"sort_index": 0}}


def _op_event(r: OpRecord) -> dict:
    # args carry every field of the op record, so a trace alone rebuilds the run's records
    # (npusim.trace.read) and every report that is a function of them.
    args: dict[str, Any] = {"op": r.index, "kind": r.kind, "ready": r.ready, "pipe_free": r.pipe_free}
    if r.blocker >= 0:
        args.update(waited_on=r.blocker, waited_on_slot=r.blocker_is_slot, flag_cycles=r.latency)
    if r.kind == "dma":
        args.update(path=r.path, bytes=r.nbytes, role=r.role)
        if r.level:
            args["level"] = r.level
    elif r.kind == "mmad":
        args.update(macs=r.macs, dtype=r.dtype)
    else:
        args.update(vop=r.vop, elements=r.elements, dtype=r.dtype)
    return {"ph": "X", "name": r.name, "cat": r.role or r.kind, "pid": unit_pid(r.core, r.unit),
            "tid": pipe_tid(r.unit, r.pipe), "ts": _us(r.start), "dur": _us(r.end - r.start), "args": args}


def _flow_events(graph: KernelGraph, records: list[OpRecord]) -> Iterator[dict]:
    """One s/f pair per dependency edge that crosses pipes or units (same-pipe edges are program order)."""
    by_index = {r.index: r for r in records}
    ops = graph.ops
    flow_id = 0
    for r in records:
        op = ops[r.index]
        for d in (*op.deps, *op.slot_deps):
            src = by_index.get(d)
            if src is None or (src.core, src.unit, src.pipe) == (r.core, r.unit, r.pipe):
                continue
            flow_id += 1
            cat = "slot" if d in op.slot_deps else "dep"
            # The start binds to the producer's slice (its last cycle), the end to the consumer's slice.
            yield {"ph": "s", "id": flow_id, "name": "dep", "cat": cat, "pid": unit_pid(src.core, src.unit),
                   "tid": pipe_tid(src.unit, src.pipe), "ts": _us(max(src.start, src.end - 1))}
            yield {"ph": "f", "bp": "e", "id": flow_id, "name": "dep", "cat": cat, "pid": unit_pid(r.core, r.unit),
                   "tid": pipe_tid(r.unit, r.pipe), "ts": _us(r.start)}


def _occupancy_events(graph: KernelGraph, records: list[OpRecord]) -> Iterator[dict]:
    for (core, unit, buffer), points in sorted(buffer_occupancy(graph, records).items()):
        pid = unit_pid(core, unit)
        for t, level in points:
            yield {"ph": "C", "name": f"{buffer.upper()} occupancy", "pid": pid, "ts": _us(t),
                   "args": {"bytes": level}}


def bandwidth_series(records: Iterable[OpRecord], cycles: int, level: str,
                     bins: int = BANDWIDTH_BINS) -> tuple[int, list[float], list[float]]:
    """Average read and write B/cycle at `level` per bin of `width` cycles; transfer bytes are spread
    evenly over the transfer's duration. Returns (width, read, write)."""
    width = max(1, -(-cycles // bins))
    n = -(-cycles // width) if cycles else 0
    rd, wr = [0.0] * n, [0.0] * n
    for r in records:
        if r.level != level or r.end <= r.start:
            continue
        series = rd if r.path.startswith("gm_") else wr
        per_cycle = r.nbytes / (r.end - r.start)
        b0, b1 = r.start // width, (r.end - 1) // width
        for b in range(b0, b1 + 1):
            lo, hi = max(r.start, b * width), min(r.end, (b + 1) * width)
            series[b] += per_cycle * (hi - lo)
    return width, [x / width for x in rd], [x / width for x in wr]


def _bandwidth_events(records: list[OpRecord], cycles: int) -> Iterator[dict]:
    for level in ("hbm", "l2"):
        width, rd, wr = bandwidth_series(records, cycles, level)
        for b, (r, w) in enumerate(zip(rd, wr)):
            yield {"ph": "C", "name": f"{level.upper()} bandwidth (B/cycle)", "pid": MEMORY_PID,
                   "ts": _us(b * width), "args": {"read": round(r, 3), "write": round(w, 3)}}


def iter_trace_events(cfg: HardwareConfig, graph: KernelGraph, records: list[OpRecord],
                      cycles: int) -> Iterator[dict]:
    yield from _name_events(records)
    for r in records:
        yield _op_event(r)
    yield from _flow_events(graph, records)
    yield from _occupancy_events(graph, records)
    yield from _bandwidth_events(records, cycles)


def write_trace(fh: IO[str], cfg: HardwareConfig, graph: KernelGraph, records: list[OpRecord],
                cycles: int, seed: int, writebacks: list[WritebackRecord] = ()) -> None:
    fh.write('{"displayTimeUnit": "ns",\n"metadata": ')
    meta = trace_metadata(cfg, graph, cycles, seed)
    meta["writebacks"] = [[w.cycle, w.nbytes, w.role, w.cause] for w in writebacks]
    fh.write(json.dumps(meta, sort_keys=True))
    fh.write(',\n"traceEvents": [\n')
    first = True
    for ev in iter_trace_events(cfg, graph, records, cycles):
        if not first:
            fh.write(",\n")
        fh.write(json.dumps(ev, separators=(",", ":")))
        first = False
    fh.write("\n]}\n")


def save_trace(path, cfg: HardwareConfig, graph: KernelGraph, records: list[OpRecord], cycles: int,
               seed: int, writebacks: list[WritebackRecord] = ()) -> None:
    with atomic_open(path) as fh:
        write_trace(fh, cfg, graph, records, cycles, seed, writebacks)
