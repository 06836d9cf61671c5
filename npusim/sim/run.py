"""One simulation run: validate the graph, execute it on the machine, check the numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.validate import validate_graph
from npusim.hw.datapath import Datapath
from npusim.hw.machine import Machine
from npusim.hw.records import Recorder
import npusim.kernels  # noqa: F401  (registers the kernels' compute functions)
from npusim.sim.gc_pause import gc_paused
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
             recorder: Recorder | None = None) -> RunResult:
    recorder = recorder if recorder is not None else Recorder()
    t0 = time.perf_counter()
    with gc_paused():
        validate_graph(graph, cfg)
        datapath = Datapath(graph, seed) if numerics else None
        machine = Machine(cfg, graph, recorder, datapath)
        cycles = machine.run()
    verdict = check_numerics(graph, datapath) if datapath is not None else None
    wall = time.perf_counter() - t0
    peak = machine.hbm.peak_window_bytes / cfg.hbm.window_cycles
    return RunResult(graph, cfg, recorder, cycles, wall, verdict, seed, peak)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.dtype(f"u{a.dtype.itemsize}"))


def check_numerics(graph: KernelGraph, datapath: Datapath) -> NumericsVerdict | None:
    spec = graph.reference
    if not spec:
        return None
    fn = REFERENCES.get(spec["fn"])
    if fn is None:
        raise GraphError(f"graph {graph.name!r}: unknown reference {spec['fn']!r} (known: {', '.join(REFERENCES)})")
    inputs = [datapath.gm[name] for name in spec["inputs"]]
    got = datapath.gm[spec["output"]]
    kwargs = spec.get("kwargs", {})
    want = np.asarray(fn(*inputs, **kwargs)).astype(got.dtype)
    if want.shape != got.shape:
        raise GraphError(f"reference {spec['fn']} has shape {want.shape}, output {spec['output']} has {got.shape}")
    # Bit patterns, not values: -0.0 vs 0.0 or a NaN payload is a mismatch too.
    mismatches = int(np.count_nonzero(_bits(want) != _bits(got)))
    rel = mx = None
    if spec.get("truth"):
        truth = REFERENCES[spec["truth"]](*inputs, **kwargs)
        err = got.astype(np.float64) - truth
        norm = float(np.linalg.norm(truth))
        rel = float(np.linalg.norm(err) / norm) if norm > 0 else float(np.linalg.norm(err))
        mx = float(np.max(np.abs(err))) if err.size else 0.0
    return NumericsVerdict(mismatches == 0, mismatches, int(got.size), rel, mx)
