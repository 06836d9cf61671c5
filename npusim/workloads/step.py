"""A model's forward step as the sequence of kernels it launches: every GEMM and attention of every
layer, in layer order, each simulated on its own (kernels run back to back; no overlap between them).

Two ways to go through a step:
- `run_step`: one method, every kernel of the chosen layers simulated in turn, on one timeline (kernel k
  starts when kernel k-1 ends); the trace, if asked for, is streamed to disk kernel by kernel, so memory
  holds one kernel's graph and records at a time, however many layers run.
- `compare_step`: every method over the chosen layers, layer by layer, reporting each layer as it
  finishes; the totals are what `compare --workload` obtains by multiplying distinct shapes, but from
  simulating every layer.
"""

from __future__ import annotations

import gc
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.graph.kernel_graph import KernelGraph
from npusim.io import atomic_open
from npusim.kernels.attention.build import build_attention
from npusim.kernels.gemm.quant import build_gemm
from npusim.report.metrics import traffic_summary
from npusim.sim.helpers import InputsAhead, fork_context
from npusim.sim.run import simulate
from npusim.workloads.load import Workload

# Attention is modelled for decode (one query per sequence, batch = the phase's tokens) up to this batch.
MAX_DECODE_BATCH = 256


@dataclass(frozen=True)
class StepKernel:
    layer: int  # 0-based
    name: str  # the workload's name for it: "qkv_proj", "gqa_decode", ...
    kind: str  # "gemm" | "attention"
    shape: tuple[tuple[str, Any], ...]  # build options, as sorted (name, value) pairs


def layer_count(wl: Workload, layers: str | int | None) -> int:
    """Layers a step covers: "all" (or None) = the model's; an int N = the first N."""
    total = wl.workload.layers
    if layers is None or layers == "all":
        return total
    try:
        n = int(layers)
    except (TypeError, ValueError):
        raise NpusimError(f"--layers {layers!r}: give 'all' or a number of layers (1..{total})") from None
    if not 1 <= n <= total:
        raise NpusimError(f"--layers {n}: {wl.workload.name} has {total} layers; give 1..{total} or 'all'")
    return n


def step_kernels(wl: Workload, tokens: int, layers: int, context: int | None) -> Iterator[StepKernel]:
    total = wl.workload.layers
    for layer in range(layers):
        for gs in wl.gemm:
            if gs.in_layer(layer, total):
                shape = (("k", gs.k), ("m", gs.m_for(tokens)), ("n", gs.n))
                for _ in range(gs.count):
                    yield StepKernel(layer, gs.name, "gemm", shape)
        if tokens > MAX_DECODE_BATCH:
            continue  # a prefill phase: attention chunks of > 256 queries are not modelled
        for at in wl.attention:
            if at.in_layer(layer, total):
                shape = (("batch", tokens), ("head_dim", at.head_dim), ("kv_heads", at.kv_heads),
                         ("kv_len", context or at.contexts[0]), ("latent", at.latent), ("q_heads", at.q_heads),
                         ("q_len", 1), ("rope_dim", at.rope_dim))
                yield StepKernel(layer, at.name, "attention", shape)


def build_kernel(cfg: HardwareConfig, k: StepKernel, method: str, weights: str, passes: int) -> KernelGraph:
    """The graph of one kernel under `method` (native runs bf16 weights / KV; the others `weights` / int8 KV)."""
    shape = dict(k.shape)
    if k.kind == "gemm":
        return build_gemm(cfg, shape["m"], shape["k"], shape["n"], None, method=method,
                          weights="bf16" if method == "native" else weights, passes=passes)
    return build_attention(cfg, kv="bf16" if method == "native" else "int8", method=method, passes=passes,
                           block=None, cores=None, **shape)


def run_step(cfg: HardwareConfig, wl: Workload, phase: str | None, method: str, *, weights: str = "int8",
             passes: int = 2, layers: str | int | None = "all", context: int | None = None, numerics: bool = False,
             seed: int = 0, trace: str | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Simulate every kernel of the step's layers under one method, back to back."""
    from npusim.trace.chrome import TraceStream

    phase, tokens = wl.tokens(phase)
    n_layers = layer_count(wl, layers)
    t0 = time.perf_counter()
    per_name: dict[str, dict[str, Any]] = {}
    cycles = ops = hbm = 0
    exact = True if numerics else None
    with (atomic_open(trace) if trace else nullcontext()) as fh:
        stream = TraceStream(fh, cfg) if fh is not None else None
        kernels = list(step_kernels(wl, tokens, n_layers, context))
        nxt: list = []   # the next kernel's graph and its inputs, started while this kernel replays

        def start_next(i: int) -> None:
            # only into a forked child: on a thread, the inputs and the Python-bound replay would slow
            # each other down (npusim/sim/helpers.py); two kernels' inputs are held at a time
            if i + 1 < len(kernels) and fork_context() is not None:
                g = build_kernel(cfg, kernels[i + 1], method, weights, passes)
                nxt.append((g, InputsAhead(g, seed)))

        for i, k in enumerate(kernels):
            graph, inputs = nxt.pop() if nxt else (build_kernel(cfg, k, method, weights, passes), None)
            try:
                res = simulate(graph, cfg, seed=seed, numerics=numerics, inputs=inputs,
                               before_replay=(lambda i=i: start_next(i)) if numerics else None)
            except BaseException:
                for _, started in nxt:   # the next kernel's child must not outlive the step
                    started.cancel()
                raise
            del graph, inputs
            if stream is not None:
                stream.add_kernel(res.graph, res.records, res.cycles, cycles_offset=cycles, label=f"L{k.layer}")
            row = per_name.setdefault(k.name, {"name": k.name, "kind": k.kind, "shape": dict(k.shape),
                                               "count": 0, "cycles": 0, "ops": 0})
            row["count"] += 1
            row["cycles"] += res.cycles
            row["ops"] += len(res.graph.ops)
            cycles += res.cycles
            ops += len(res.graph.ops)
            tr = traffic_summary(res.records.ops, res.records.writebacks)
            hbm += tr["hbm_read_bytes"] + tr["hbm_write_bytes"]
            if res.numerics is not None:
                exact = exact and res.numerics.exact
            if progress:
                progress(f"layer {k.layer + 1}/{n_layers} {k.name}: {res.cycles:,} cycles, {len(res.graph.ops):,} ops")
            # No gc.collect() here: a kernel's graph, machine, records and arrays are freed by reference
            # counting when `res` goes (its cyclic garbage is a handful of small objects), and a full
            # collection would traverse the next kernel's graph, already built: 0.2-0.9 s per kernel.
            del res
        doc = {"workload": wl.workload.name, "phase": phase, "tokens": tokens, "hw": cfg.meta.name,
               "method": method, "weights": "bf16" if method == "native" else weights,
               "layers_simulated": n_layers, "model_layers": wl.workload.layers,
               "kernels_simulated": sum(r["count"] for r in per_name.values()),
               "cycles": cycles, "time_us": cycles / cfg.chip.clock_hz * 1e6, "ops": ops, "hbm_bytes": hbm,
               "exact": exact, "kernels": list(per_name.values())}
        if stream is not None:
            stream.close({"workload": wl.workload.name, "phase": phase, "method": doc["method"],
                          "layers": n_layers}, cycles, seed)
    doc["wall_s"] = round(time.perf_counter() - t0, 3)
    return doc


def compare_step(cfg: HardwareConfig, wl: Workload, phase: str | None, *, weights: str = "int8", passes: int = 2,
                 layers: str | int | None = "all", context: int | None = None, numerics: bool = False,
                 seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every method over every kernel of the chosen layers, simulated layer by layer (nothing multiplied)."""
    from npusim.report.compare import add_to_totals, compare_fields, finish_totals, gemm_methods
    from npusim.report.run_report import run_json

    phase, tokens = wl.tokens(phase)
    n_layers = layer_count(wl, layers)
    methods = [r["method"] for r in gemm_methods(cfg, weights, passes)]
    if "direct" in methods or weights != "int8":
        raise NpusimError("compare --layers: only int8 weights (native, dequant, msd) are supported")
    totals: dict[str, dict[str, Any]] = {}
    per_layer = []
    kernels = 0
    by_layer: dict[int, list[StepKernel]] = {}
    for k in step_kernels(wl, tokens, n_layers, context):
        by_layer.setdefault(k.layer, []).append(k)
    for layer, ks in by_layer.items():
        row: dict[str, Any] = {"layer": layer}
        for k in ks:
            for m in methods:
                c = compare_fields(run_json(simulate(build_kernel(cfg, k, m, weights, passes), cfg, seed=seed,
                                                     numerics=numerics)), None)
                add_to_totals(totals, c)
                row[c["method"]] = row.get(c["method"], 0) + c["cycles"]  # labels as "msd-2"
                kernels += 1
        per_layer.append(row)
        gc.collect()  # the layer's leftovers, while the heap is small: memory stays at one kernel
        if progress:
            progress(f"layer {layer + 1}/{n_layers}: "
                     + ", ".join(f"{m} {c:,}" for m, c in row.items() if m != "layer") + " cycles")
    return {"workload": wl.workload.name, "source": wl.workload.source, "phase": phase, "tokens": tokens,
            "hw": cfg.meta.name, "layers": n_layers, "model_layers": wl.workload.layers,
            "layers_simulated": n_layers, "kernels_simulated": kernels, "per_layer": per_layer,
            "totals": finish_totals(totals, cfg)}
