"""The machine: executes a KernelGraph on simpy, one process per (unit, pipe).

A pipe is an in-order queue. Its process takes its ops in program order; each op starts when every
dependency has ended (plus the flag latency of that edge) and the pipe is free, and occupies the pipe for
its duration.

Only GM transfers need the simulated clock: their duration depends on what else holds HBM bandwidth and
on what L2 holds at the moment they start (memory.py), so a pipe waits (one timeout) until a GM
transfer's start before booking it. Every other op's duration is static, so its start and end follow
from numbers already known and the pipe computes them at once and runs ahead to its next op; it yields
only to wait for a dependency whose end is not known yet. The times are those of the one-event-per-op
execution; only the order in which same-cycle GM transfers book bandwidth may differ.

Numerics are replayed after the timing (hw.replay, from the `start` and `end` cycles this machine
leaves), in simulated-time order: every op reads its inputs at its start cycle and writes its outputs at
its end cycle (ends before starts at equal cycles), so a schedule that lets a tile be overwritten before
it is read still produces wrong numbers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

import simpy

from npusim.config.schema import HardwareConfig
from npusim.errors import DeadlockError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Op, OpKind
from npusim.hw import costs
from npusim.hw.memory import BandwidthCalendar, L2Cache
from npusim.hw.records import OpRecord, WritebackRecord


class Sink(Protocol):
    def op(self, rec: OpRecord) -> None: ...
    def writeback(self, rec: WritebackRecord) -> None: ...


class Machine:
    def __init__(self, cfg: HardwareConfig, graph: KernelGraph, sink: Sink):
        self.cfg = cfg
        self.graph = graph
        self.sink = sink
        self.env = simpy.Environment()
        self.hbm = BandwidthCalendar(cfg.hbm_bytes_per_cycle, cfg.hbm.window_cycles)
        self.l2 = L2Cache(cfg.l2.capacity_bytes) if cfg.l2.enabled else None
        n = len(graph.ops)
        self.end: list[int | None] = [None] * n
        self.start: list[int | None] = [None] * n
        self._waiters: dict[int, simpy.Event] = {}
        self._blocked: dict[tuple, tuple[int, int]] = {}  # pipe -> (op waiting, dep it waits on)
        self._durations: dict[tuple, int | None] = {}
        self._ports: dict = {}

    # ---- public -----------------------------------------------------------------------------
    def run(self) -> int:
        """Simulate to completion; return the makespan in cycles. Raises DeadlockError if stuck."""
        queues: dict[tuple, list[int]] = defaultdict(list)
        for i, op in enumerate(self.graph.ops):
            unit = op.unit
            queues[(unit.core, unit.name, op.pipe)].append(i)  # plain keys: hashing a Unit is slow
        for key in sorted(queues):
            self.env.process(self._pipe(key, queues[key]))
        self.env.run()
        if self._blocked:
            self._raise_deadlock()
        makespan = max(self.end, default=0)
        if self.l2 is not None:
            for nbytes, role in self.l2.dirty_lines():
                self.sink.writeback(WritebackRecord(makespan, nbytes, role, "flush"))
        return makespan

    # ---- internals ----------------------------------------------------------------------------
    def _pipe(self, key, op_ids: list[int]):
        """The process of one pipe. What does not depend on the run (dependency edges with their flag
        latencies, static durations, the record's graph fields) is worked out per op as it comes up;
        everything else is the dynamic part of the model."""
        env, end, start_of, ops, cfg = self.env, self.end, self.start, self.graph.ops, self.cfg
        record = self.sink.op
        new_record = tuple.__new__  # OpRecord is a NamedTuple: skip its keyword-taking __new__
        intra, cross = cfg.sync.intra_core_flag_cycles, cfg.sync.cross_core_flag_cycles
        durations = self._durations  # ops repeat a few shapes: one cost evaluation per shape
        waiters, blocked = self._waiters, self._blocked
        mmad = OpKind.MMAD
        pipe_free = 0
        for i in op_ids:
            op = ops[i]
            unit, pipe, kind, m, k, n = op.unit, op.pipe, op.kind, op.m, op.k, op.n
            shape = (kind, op.path, op.nbytes, m, k, n, op.dtype, op.vop, op.elements)
            static = durations.get(shape, -1)
            if static == -1:
                static = durations[shape] = self._static_duration(op)
            ready, blocker, latency, blocker_is_slot = 0, -1, 0, False
            for is_slot, deps in ((False, op.deps), (True, op.slot_deps)):
                for d in deps:
                    e = end[d]
                    if e is None:
                        blocked[key] = (i, d)
                        yield self._event(d)
                        del blocked[key]
                        e = end[d]
                    dep = ops[d]
                    # costs.flag_cycles, inlined: this runs once per edge of the graph
                    if dep.unit is unit or dep.unit == unit:
                        lat = 0 if dep.pipe is pipe else intra
                    else:
                        lat = cross
                    if e + lat > ready:
                        ready, blocker, latency, blocker_is_slot = e + lat, d, lat, is_slot
            # Every end computed so far is >= the clock, so start >= env.now here.
            start = ready if ready > pipe_free else pipe_free
            if static is None:
                if start > env.now:
                    yield env.timeout(start - env.now)
                duration, level = self._gm_transfer(op, start)
            else:
                duration, level = static, ""
            finish = start + duration
            end[i] = finish
            start_of[i] = start
            ev = waiters.pop(i, None)
            if ev is not None:
                ev.succeed()
            # str enums are strs: records carry the members themselves (no .value lookups per op)
            record(new_record(OpRecord, (
                i, op.name, unit.core, unit.name, pipe, kind, op.path or "", op.nbytes, op.role or "",
                m * k * n if kind is mmad else 0, op.dtype or "", op.vop or "", op.elements,
                start, finish, ready, pipe_free, blocker, blocker_is_slot, latency, level)))
            pipe_free = finish

    def _event(self, i: int) -> simpy.Event:
        ev = self._waiters.get(i)
        if ev is None:
            ev = self._waiters[i] = self.env.event()
        return ev

    def _static_duration(self, op: Op) -> int | None:
        """The duration of ops whose cost does not depend on what else is running; None for GM transfers."""
        cfg = self.cfg
        if op.kind is OpKind.MMAD:
            return costs.mmad_cycles(cfg, op.m, op.k, op.n, op.dtype)
        if op.kind is OpKind.VEC:
            return costs.vector_cycles(cfg, op.vop, op.elements, op.dtype)
        if not (op.path.reads_gm or op.path.writes_gm):
            return costs.dma_cycles_uncontended(cfg, op.path, op.nbytes)
        return None

    def _gm_transfer(self, op: Op, start: int) -> tuple[int, str]:
        """Duration and level ("hbm" or "l2") of a transfer that reads or writes GM, issued at `start`."""
        path = op.path
        port = self._ports.get(path)
        if port is None:
            port = self._ports[path] = self._port(path)
        start_cycles, rate, l2_rate, hbm_delay, reads = port
        key = (op.gm.tensor, op.gm.region)
        l2 = self.l2
        nbytes = op.nbytes
        if reads:
            if l2 is not None and l2.read(key):
                return start_cycles + costs.transfer_cycles(nbytes, l2_rate), "l2"
            end = self.hbm.reserve(start + hbm_delay, nbytes, rate)
            if l2 is not None:
                self._writeback(start, l2.fill(key, nbytes, op.role.value, dirty=False))
            return end - start, "hbm"
        # A GM write: into L2 (write-back) when it is on, else straight to HBM.
        if l2 is not None:
            self._writeback(start, l2.fill(key, nbytes, op.role.value, dirty=True))
            return start_cycles + costs.transfer_cycles(nbytes, l2_rate), "l2"
        return self.hbm.reserve(start + hbm_delay, nbytes, rate) - start, "hbm"

    def _port(self, path) -> tuple[int, float, float, int, bool]:
        """(start cycles, port rate, rate when L2 serves it, cycles before HBM sees it, reads GM) of a
        GM path: the costs a GM transfer's duration is made of (docs/model.md, "GM transfers")."""
        cfg = self.cfg
        port = costs.port(cfg, path)
        rate = port.rate_bytes_per_cycle
        if path.reads_gm:
            return (port.start_cycles, rate, min(rate, cfg.l2.read_rate_bytes_per_cycle),
                    port.start_cycles + cfg.hbm.first_byte_cycles, True)
        return port.start_cycles, rate, min(rate, cfg.l2.write_rate_bytes_per_cycle), port.start_cycles, False

    def _writeback(self, now: int, evicted: list[tuple[int, str]]) -> None:
        for nbytes, role in evicted:
            # Write-backs take HBM bandwidth but no pipe: the L2 drains them on its own.
            self.hbm.reserve(now, nbytes)
            self.sink.writeback(WritebackRecord(now, nbytes, role, "evict"))

    def _raise_deadlock(self) -> None:
        ops = self.graph.ops
        lines = []
        for key, (i, d) in sorted(self._blocked.items(), key=lambda kv: kv[1][0]):
            core, unit, pipe = key
            lines.append(f"  core{core}.{unit} {pipe.value}: op {i} {ops[i].name!r} waits on op {d} {ops[d].name!r} "
                         f"({ops[d].unit} {ops[d].pipe.value}), which never ran")
        done = sum(e is not None for e in self.end)
        raise DeadlockError(
            f"simulation of {self.graph.name!r} cannot finish: {done} of {len(ops)} ops ran, "
            f"{len(lines)} pipes are stuck (a dependency that program order can never satisfy):\n"
            + "\n".join(lines[:16]) + (f"\n  ... and {len(lines) - 16} more" if len(lines) > 16 else ""))
