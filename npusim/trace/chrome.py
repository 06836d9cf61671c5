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

import orjson

from npusim import __version__
from npusim.config.schema import HardwareConfig
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import PIPES_OF, UnitKind
from npusim.hw.records import OpRecord, Recorder, WritebackRecord
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


_TIDS = {kind: {p.value: 1 + i for i, p in enumerate(PIPES_OF[kind])} for kind in (UnitKind.AIC, UnitKind.AIV)}


def pipe_tid(unit: str, pipe: str) -> int:
    return _TIDS[UnitKind.AIC if unit == "aic" else UnitKind.AIV][pipe]


def _write_events(fh: IO[str], events: Iterable[dict], first: bool) -> bool:
    """Write events as comma-separated lines, in batches; return whether nothing has been written yet.

    orjson rather than the json module: encoding is most of a trace's cost, and orjson is about 15x
    faster on these small objects, with the same compact output."""
    dumps = orjson.dumps
    batch: list[bytes] = []
    for ev in events:
        batch.append(dumps(ev))
        if len(batch) == 4096:
            fh.write(("" if first else ",\n") + b",\n".join(batch).decode())
            first, batch = False, []
    if batch:
        fh.write(("" if first else ",\n") + b",\n".join(batch).decode())
        first = False
    return first


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


def _unit_name_events(units: list[tuple[int, str]], memory: bool) -> Iterator[dict]:
    for core, unit in units:
        pid = unit_pid(core, unit)
        label = "AIC" if unit == "aic" else f"AIV{unit[3:]}"
        yield {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"core {core} {label}"}}
        yield {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}}
        kind = UnitKind.AIC if unit == "aic" else UnitKind.AIV
        for pipe in PIPES_OF[kind]:
            tid = pipe_tid(unit, pipe.value)
            yield {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": pipe.value}}
            yield {"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}}
    if memory:
        yield {"ph": "M", "name": "process_name", "pid": MEMORY_PID, "tid": 0, "args": {"name": "memory (HBM, L2)"}}
        yield {"ph": "M", "name": "process_sort_index", "pid": MEMORY_PID, "tid": 0, "args": {"sort_index": 0}}


def _op_event(r: OpRecord, index_offset: int = 0, t0: int = 0) -> dict:
    # args carry every field of the op record, so a trace alone rebuilds the run's records
    # (npusim.trace.read) and every report that is a function of them.
    args: dict[str, Any] = {"op": r.index + index_offset, "kind": r.kind, "ready": r.ready + t0,
                            "pipe_free": r.pipe_free + t0}
    if r.blocker >= 0:
        args.update(waited_on=r.blocker + index_offset, waited_on_slot=r.blocker_is_slot, flag_cycles=r.latency)
    if r.kind == "dma":
        args.update(path=r.path, bytes=r.nbytes, role=r.role)
        if r.level:
            args["level"] = r.level
    elif r.kind == "mmad":
        args.update(macs=r.macs, dtype=r.dtype)
    else:
        args.update(vop=r.vop, elements=r.elements, dtype=r.dtype)
    return {"ph": "X", "name": r.name, "cat": r.role or r.kind, "pid": unit_pid(r.core, r.unit),
            "tid": pipe_tid(r.unit, r.pipe), "ts": _us(r.start + t0), "dur": _us(r.end - r.start), "args": args}


def _flow_events(graph: KernelGraph, records: list[OpRecord], flow_id: int = 0, t0: int = 0) -> Iterator[dict]:
    """One s/f pair per dependency edge that crosses pipes or units (same-pipe edges are program order);
    ids count up from `flow_id` + 1."""
    by_index = {r.index: r for r in records}
    ops = graph.ops
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
                   "tid": pipe_tid(src.unit, src.pipe), "ts": _us(max(src.start, src.end - 1) + t0)}
            yield {"ph": "f", "bp": "e", "id": flow_id, "name": "dep", "cat": cat, "pid": unit_pid(r.core, r.unit),
                   "tid": pipe_tid(r.unit, r.pipe), "ts": _us(r.start + t0)}


def _occupancy_events(graph: KernelGraph, records: list[OpRecord], t0: int = 0) -> Iterator[dict]:
    for (core, unit, buffer), points in sorted(buffer_occupancy(graph, records).items()):
        pid = unit_pid(core, unit)
        for t, level in points:
            yield {"ph": "C", "name": f"{buffer.upper()} occupancy", "pid": pid, "ts": _us(t + t0),
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


def _bandwidth_events(records: list[OpRecord], cycles: int, offset: int = 0) -> Iterator[dict]:
    for level in ("hbm", "l2"):
        width, rd, wr = bandwidth_series(records, cycles, level)
        for b, (r, w) in enumerate(zip(rd, wr)):
            yield {"ph": "C", "name": f"{level.upper()} bandwidth (B/cycle)", "pid": MEMORY_PID,
                   "ts": _us(offset + b * width), "args": {"read": round(r, 3), "write": round(w, 3)}}


def iter_trace_events(cfg: HardwareConfig, graph: KernelGraph, records: list[OpRecord],
                      cycles: int) -> Iterator[dict]:
    yield from _unit_name_events(sorted({(r.core, r.unit) for r in records}), memory=True)
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
    _write_events(fh, iter_trace_events(cfg, graph, records, cycles), True)
    fh.write("\n]}\n")


class TraceStream:
    """One trace of many kernels run back to back (a model step), written as each kernel finishes, so
    only one kernel's records are ever in memory. Kernel k's times are shifted by the cycles of the
    kernels before it and its op indices by their op counts, so the file reads as one run; metadata
    (with the total makespan) comes last, once it is known."""

    def __init__(self, fh: IO[str], cfg: HardwareConfig):
        self.fh, self.cfg = fh, cfg
        self._seen_units: set = set()
        self._ops = self._flows = 0
        self._kernels: list[dict[str, Any]] = []
        self._writebacks: list[list] = []
        self._first = True
        fh.write('{"displayTimeUnit": "ns",\n"traceEvents": [\n')

    def _write(self, events: Iterable[dict]) -> None:
        self._first = _write_events(self.fh, events, self._first)

    def add_kernel(self, graph: KernelGraph, records: Recorder, cycles: int, *, cycles_offset: int,
                   label: str = "") -> None:
        off = cycles_offset
        local = records.ops
        units = sorted({(r.core, r.unit) for r in local} - self._seen_units)
        self._write(_unit_name_events(units, memory=not self._seen_units))
        self._seen_units.update(units)
        self._write(_op_event(r, self._ops, off) for r in local)
        n_flows = [0]

        def flows():
            for ev in _flow_events(graph, local, self._flows, off):
                n_flows[0] += 1
                yield ev
        self._write(flows())
        self._flows += n_flows[0] // 2
        self._write(_occupancy_events(graph, local, off))
        self._write(_bandwidth_events(local, cycles, off))
        self._kernels.append({"label": label, "graph": graph.name, "kernel": graph.meta, "start_cycle": off,
                              "cycles": cycles, "first_op": self._ops, "ops": len(graph.ops)})
        self._writebacks += [[w.cycle + off, w.nbytes, w.role, w.cause] for w in records.writebacks]
        self._ops += len(graph.ops)

    def close(self, kernel: dict[str, Any], cycles: int, seed: int) -> None:
        """Finish the file: the events list, then the metadata of the whole step."""
        meta = {"generator": f"npusim {__version__}", "time_base": TIME_BASE, "cycle_ns": 1,
                "clock_hz": self.cfg.chip.clock_hz, "makespan_cycles": cycles, "seed": seed,
                "kernel": kernel, "graph": "step", "kernels": self._kernels, "config": self.cfg.to_data(),
                "writebacks": self._writebacks}
        self.fh.write('\n],\n"metadata": ')
        self.fh.write(json.dumps(meta, sort_keys=True))
        self.fh.write("}\n")


def save_trace(path, cfg: HardwareConfig, graph: KernelGraph, records: list[OpRecord], cycles: int,
               seed: int, writebacks: list[WritebackRecord] = ()) -> None:
    with atomic_open(path) as fh:
        write_trace(fh, cfg, graph, records, cycles, seed, writebacks)
