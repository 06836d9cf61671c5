"""The machine: executes a KernelGraph on simpy, one process per (unit, pipe), one event per op.

A pipe is an in-order queue. Its process takes its ops in program order; each op waits until every
dependency has ended (plus the flag latency of that edge), then occupies the pipe for its duration. A
DMA's duration comes from the memory system at the moment it starts (see memory.py), so an op costs one
timeout, plus one wait for each dependency that had not finished when the pipe reached it.
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
from npusim.hw.datapath import Datapath
from npusim.hw.memory import BandwidthCalendar, L2Cache
from npusim.hw.records import OpRecord, WritebackRecord


class Sink(Protocol):
    def op(self, rec: OpRecord) -> None: ...
    def writeback(self, rec: WritebackRecord) -> None: ...


class Machine:
    def __init__(self, cfg: HardwareConfig, graph: KernelGraph, sink: Sink,
                 datapath: Datapath | None = None):
        self.cfg = cfg
        self.graph = graph
        self.sink = sink
        self.datapath = datapath
        self.env = simpy.Environment()
        self.hbm = BandwidthCalendar(cfg.hbm_bytes_per_cycle, cfg.hbm.window_cycles)
        self.l2 = L2Cache(cfg.l2.capacity_bytes) if cfg.l2.enabled else None
        n = len(graph.ops)
        self.end: list[int | None] = [None] * n
        self._waiters: dict[int, simpy.Event] = {}
        self._blocked: dict[tuple, tuple[int, int]] = {}  # pipe -> (op waiting, dep it waits on)
        self._durations: dict[tuple, int | None] = {}

    # ---- public -----------------------------------------------------------------------------
    def run(self) -> int:
        """Simulate to completion; return the makespan in cycles. Raises DeadlockError if stuck."""
        queues: dict[tuple, list[int]] = defaultdict(list)
        for i, op in enumerate(self.graph.ops):
            queues[(op.unit, op.pipe)].append(i)
        for key in sorted(queues, key=lambda k: (k[0].core, k[0].name, k[1].value)):
            self.env.process(self._pipe(key, queues[key]))
        self.env.run()
        if self._blocked:
            self._raise_deadlock()
        makespan = int(self.env.now)
        if self.l2 is not None:
            for nbytes, role in self.l2.dirty_lines():
                self.sink.writeback(WritebackRecord(makespan, nbytes, role, "flush"))
        return makespan

    # ---- internals ----------------------------------------------------------------------------
    def _plan(self, op_ids: list[int]) -> list[tuple]:
        """Everything about a pipe's ops that does not depend on the run: dependency edges with their
        flag latencies, the duration where it is static, the record fields. Built once, so the event
        loop does only the dynamic work."""
        ops, cfg = self.graph.ops, self.cfg
        intra, cross = cfg.sync.intra_core_flag_cycles, cfg.sync.cross_core_flag_cycles
        durations = self._durations  # ops repeat a few shapes: one cost evaluation per shape
        plan = []
        for i in op_ids:
            op = ops[i]
            unit, pipe = op.unit, op.pipe
            edges = []
            # costs.flag_cycles, inlined: this loop runs once per edge of the graph
            for slot, deps in ((False, op.deps), (True, op.slot_deps)):
                for d in deps:
                    dep = ops[d]
                    same_unit = dep.unit is unit or dep.unit == unit
                    edges.append((d, (0 if dep.pipe is pipe else intra) if same_unit else cross, slot))
            shape = (op.kind, op.path, op.nbytes, op.m, op.k, op.n, op.dtype, op.vop, op.elements)
            static = durations.get(shape, -1)
            if static == -1:
                static = durations[shape] = self._static_duration(op)
            # str enums are strs: records carry the members themselves (no .value lookups per op)
            plan.append((i, op, edges, static, (op.name, unit.core, unit.name, pipe, op.kind),
                         (op.path or "", op.nbytes, op.role or ""), (op.macs, op.dtype or "", op.vop or "", op.elements)))
        return plan

    def _pipe(self, key, op_ids: list[int]):
        env, end, datapath, sink = self.env, self.end, self.datapath, self.sink
        waiters = self._waiters
        pipe_free = 0
        for i, op, edges, static, head, tail, tail2 in self._plan(op_ids):
            ready, blocker, latency, blocker_is_slot = 0, -1, 0, False
            for d, lat, is_slot in edges:
                e = end[d]
                if e is None:
                    self._blocked[key] = (i, d)
                    yield self._event(d)
                    del self._blocked[key]
                    e = end[d]
                if e + lat > ready:
                    ready, blocker, latency, blocker_is_slot = e + lat, d, lat, is_slot
            now = env.now
            if datapath is None and static is not None:
                # timing only and a fixed duration: one event for the wait and the op together
                start = ready if ready > now else now
                duration, level = static, ""
                yield env.timeout(start - now + duration)
            else:
                if ready > now:
                    yield env.timeout(ready - now)
                start = env.now
                pending = datapath.begin(op) if datapath is not None else None
                duration, level = (static, "") if static is not None else self._gm_transfer(op, start)
                yield env.timeout(duration)
                if pending is not None:
                    datapath.commit(op, pending)
            finish = start + duration
            end[i] = finish
            ev = waiters.pop(i, None)
            if ev is not None:
                ev.succeed()
            sink.op(OpRecord(i, *head, start, finish, ready, pipe_free, blocker, blocker_is_slot, latency,
                             *tail, level, *tail2))
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
        cfg = self.cfg
        port = costs.port(cfg, op.path)
        rate = port.rate_bytes_per_cycle
        t0 = start + port.start_cycles
        key = (op.gm.tensor, op.gm.region)
        role = op.role.value
        l2 = self.l2
        if op.path.reads_gm:
            if l2 is not None and l2.read(key):
                rate = min(rate, cfg.l2.read_rate_bytes_per_cycle)
                return port.start_cycles + costs.transfer_cycles(op.nbytes, rate), "l2"
            end = self.hbm.reserve(t0 + cfg.hbm.first_byte_cycles, op.nbytes, rate)
            if l2 is not None:
                self._writeback(start, l2.fill(key, op.nbytes, role, dirty=False))
            return end - start, "hbm"
        # A GM write: into L2 (write-back) when it is on, else straight to HBM.
        if l2 is not None:
            rate = min(rate, cfg.l2.write_rate_bytes_per_cycle)
            self._writeback(start, l2.fill(key, op.nbytes, role, dirty=True))
            return port.start_cycles + costs.transfer_cycles(op.nbytes, rate), "l2"
        end = self.hbm.reserve(t0, op.nbytes, rate)
        return end - start, "hbm"

    def _writeback(self, now: int, evicted: list[tuple[int, str]]) -> None:
        for nbytes, role in evicted:
            # Write-backs take HBM bandwidth but no pipe: the L2 drains them on its own.
            self.hbm.reserve(now, nbytes)
            self.sink.writeback(WritebackRecord(now, nbytes, role, "evict"))

    def _raise_deadlock(self) -> None:
        ops = self.graph.ops
        lines = []
        for key, (i, d) in sorted(self._blocked.items(), key=lambda kv: kv[1][0]):
            unit, pipe = key
            lines.append(f"  {unit} {pipe.value}: op {i} {ops[i].name!r} waits on op {d} {ops[d].name!r} "
                         f"({ops[d].unit} {ops[d].pipe.value}), which never ran")
        done = sum(e is not None for e in self.end)
        raise DeadlockError(
            f"simulation of {self.graph.name!r} cannot finish: {done} of {len(ops)} ops ran, "
            f"{len(lines)} pipes are stuck (a dependency that program order can never satisfy):\n"
            + "\n".join(lines[:16]) + (f"\n  ... and {len(lines) - 16} more" if len(lines) > 16 else ""))
