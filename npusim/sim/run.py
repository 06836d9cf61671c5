"""One simulation run: validate the graph, execute it on the machine, check the numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.validate import validate_graph
from npusim.hw.datapath import Datapath
from npusim.hw.machine import Machine
from npusim.hw.records import Recorder
from npusim.hw.replay import replay
import npusim.kernels  # noqa: F401  (registers the kernels' compute functions)
from npusim.sim.gc_pause import gc_paused
from npusim.sim.helpers import InputsAhead, fork_context, lower_priority, start_child
from npusim.sim.references import REFERENCES


@dataclass(frozen=True)
class NumericsVerdict:
    exact: bool
    mismatches: int
    elements: int
    rel_l2_vs_fp64: float | None
    max_abs_vs_fp64: float | None


@dataclass
class RunResult:
    graph: KernelGraph
    cfg: HardwareConfig
    records: Recorder
    cycles: int
    wall_s: float
    numerics: NumericsVerdict | None
    seed: int
    hbm_peak_bytes_per_cycle: float  # the busiest HBM window's bytes / window length


def simulate(graph: KernelGraph, cfg: HardwareConfig, *, seed: int = 0, numerics: bool = True,
             recorder: Recorder | None = None, inputs: InputsAhead | None = None,
             before_replay: Callable[[], None] | None = None) -> RunResult:
    """Validate, time the graph on the machine, and (numerics) replay its real numbers and check them.

    With numerics, the work that does not depend on the timing runs beside it, in forked helper processes
    (npusim/sim/helpers.py; a thread or after the replay where forking is not safe): the inputs (random
    tensors, quantized weights) are made while the machine times the ops, and the reference output while
    the replay computes the simulated one. Every piece is a pure function of (graph, seed): the results
    are those of one after the other, which is what NPUSIM_THREADS=1 runs (npusim/numerics/parallel.py).

    inputs: this graph's inputs, started ahead (InputsAhead), instead of starting them here.
    before_replay: called once the reference child is forked, before the replay: a step of kernels starts
    the next kernel's inputs there, so that they are made while this replay runs.
    """
    recorder = recorder if recorder is not None else Recorder()
    t0 = time.perf_counter()
    verdict = None
    ahead = None
    try:
        if inputs is not None and (inputs.graph is not graph or inputs.seed != seed):
            raise GraphError(f"simulate: the inputs given were started for graph {inputs.graph.name!r}, seed "
                             f"{inputs.seed}, not for {graph.name!r}, seed {seed}")
        if inputs is not None and not numerics:
            inputs.cancel()   # timing only: nothing will read them
        with gc_paused():
            validate_graph(graph, cfg)
            ahead = (inputs or InputsAhead(graph, seed)) if numerics else None
            machine = Machine(cfg, graph, recorder)
            cycles = machine.run()
            datapath = ahead.result() if ahead is not None else None
    except BaseException:
        for started in (inputs, ahead):   # no helper outlives a failed run
            if started is not None:
                started.cancel()
        raise
    with gc_paused():
        if datapath is not None:
            expected = ForkedReference(graph, datapath.gm)
            try:
                if before_replay is not None:
                    before_replay()
                replay(datapath, graph.ops, machine.start, machine.end)
            except BaseException:
                expected.cancel()
                raise
            verdict = check_numerics(graph, datapath, expected.result())
    wall = time.perf_counter() - t0
    peak = machine.hbm.peak_window_bytes / cfg.hbm.window_cycles
    return RunResult(graph, cfg, recorder, cycles, wall, verdict, seed, peak)


class ForkedReference:
    """reference_outputs(graph, gm), computed in a forked child from the parent's arrays as they are now
    (nothing is copied to start it; only the output and its truth come back). The child sees the
    parent's later writes to the inputs made in shared memory (helpers.InputsAhead) and a copy-on-write
    snapshot of the rest, so it is forked only when no op writes a tensor the reference reads. Where
    that does not hold, or forking is not safe (helpers.fork_context), it is computed on demand, after
    the replay."""

    def __init__(self, graph: KernelGraph, gm: dict[str, np.ndarray]):
        self.graph, self.gm = graph, gm
        self.proc = self.conn = None
        ctx = fork_context() if graph.reference and _inputs_read_only(graph) else None
        if ctx is not None:
            conn, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_reference_child, args=(graph, gm, send), daemon=True)
            if start_child(proc, conn, send):
                self.proc, self.conn = proc, conn

    def cancel(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.conn.close()
            self.proc = None

    def result(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        if not self.graph.reference:
            return None
        if self.proc is None:
            return reference_outputs(self.graph, self.gm)
        try:
            status, payload = self.conn.recv()
        except Exception:  # noqa: BLE001  (EOF: the child died, e.g. out of memory; or a payload it mangled)
            status, payload = "lost", None
        except BaseException:   # Ctrl-C: do not wait for the child to finish
            self.cancel()
            raise
        self.conn.close()
        self.proc.join()
        self.proc = None
        if status == "ok":
            return payload
        # An error, or no answer: the reference is deterministic, so computing it here raises the same
        # error with its own traceback (or gives the answer the child could not send).
        return reference_outputs(self.graph, self.gm)


def _reference_child(graph: KernelGraph, gm: dict, conn) -> None:
    lower_priority()
    try:
        conn.send(("ok", reference_outputs(graph, gm)))
    except BaseException:  # noqa: BLE001  (the parent computes it again, and raises with a traceback)
        conn.send(("error", None))
    finally:
        conn.close()


def _inputs_read_only(graph: KernelGraph) -> bool:
    """Every op that touches a tensor the reference reads only reads it (a GM-to-chip DMA): then the
    reference can run while the replay writes GM."""
    spec = graph.reference
    if not spec:
        return False
    inputs = set(spec.get("inputs", ()))
    return all(op.path is not None and op.path.reads_gm and not op.path.writes_gm
               for op in graph.ops if op.gm is not None and op.gm.tensor in inputs)


def reference_outputs(graph: KernelGraph, gm: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The reference output of the graph's algorithm on its inputs, and its FP64 truth (None without one)."""
    spec = graph.reference
    fn = REFERENCES.get(spec["fn"])
    if fn is None:
        raise GraphError(f"graph {graph.name!r}: unknown reference {spec['fn']!r} (known: {', '.join(REFERENCES)})")
    inputs = [gm[name] for name in spec["inputs"]]
    kwargs = spec.get("kwargs", {})
    want = np.asarray(fn(*inputs, **kwargs))
    truth = REFERENCES[spec["truth"]](*inputs, **kwargs) if spec.get("truth") else None
    return want, truth


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.dtype(f"u{a.dtype.itemsize}"))


def check_numerics(graph: KernelGraph, datapath: Datapath,
                   expected: tuple[np.ndarray, np.ndarray | None] | None = None) -> NumericsVerdict | None:
    """The simulated output against the reference bit for bit, and its error against the FP64 truth.
    `expected`: reference_outputs already computed (else they are computed here)."""
    spec = graph.reference
    if not spec:
        return None
    want, truth = expected if expected is not None else reference_outputs(graph, datapath.gm)
    got = datapath.gm[spec["output"]]
    want = want.astype(got.dtype)
    if want.shape != got.shape:
        raise GraphError(f"reference {spec['fn']} has shape {want.shape}, output {spec['output']} has {got.shape}")
    # Bit patterns, not values: -0.0 vs 0.0 or a NaN payload is a mismatch too.
    mismatches = int(np.count_nonzero(_bits(want) != _bits(got)))
    rel = mx = None
    if truth is not None:
        err = got.astype(np.float64) - truth
        norm = float(np.linalg.norm(truth))
        rel = float(np.linalg.norm(err) / norm) if norm > 0 else float(np.linalg.norm(err))
        mx = float(np.max(np.abs(err))) if err.size else 0.0
    return NumericsVerdict(mismatches == 0, mismatches, int(got.size), rel, mx)
