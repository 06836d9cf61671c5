"""Checks a graph must pass before it is simulated on a given hardware config.

Each check names what is wrong in the user's terms (op names, buffer, slot names, byte counts), and all
problems found are reported together in one GraphError.
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.hw.costs import cube_supports
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import BUFFERS_OF, PATHS, PIPES_OF, Buffer, OpKind, UnitKind

_MAX_LISTED = 12


def buffer_capacity(cfg: HardwareConfig, buffer: Buffer) -> int:
    return getattr(cfg.buffers, f"{buffer.value}_bytes")


def find_cycle(graph: KernelGraph) -> list[str] | None:
    """Names of the ops on one dependency cycle, or None if the edges form a DAG."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(graph.ops)))
    for i, op in enumerate(graph.ops):
        g.add_edges_from((d, i) for d in (*op.deps, *op.slot_deps))
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [graph.ops[u].name for u, _ in cycle]


def validate_graph(graph: KernelGraph, cfg: HardwareConfig) -> None:
    problems: list[str] = []
    n_ops = len(graph.ops)
    if n_ops == 0:
        raise GraphError(f"graph {graph.name!r} has no ops")

    # Ops of a big graph repeat a handful of shapes; check each shape once (the problems of a bad
    # one are reported with the first op that has it).
    valid_shapes: set = set()
    valid_uses: set = set()
    # Builders emit ops after their dependencies; only a graph with a forward edge can have a cycle,
    # so the common case never builds the networkx graph.
    forward = False
    slots = graph.slots
    dma = OpKind.DMA
    for i, op in enumerate(graph.ops):
        deps = op.slot_deps + op.deps if op.slot_deps else op.deps
        if deps:
            hi = max(deps)
            if hi >= i:   # a forward edge, to itself, or past the end
                forward = True
            if min(deps) < 0 or hi >= n_ops or (hi >= i and i in deps):
                problems += _dep_problems(i, op, deps, n_ops)
        unit, gm, nbytes = op.unit, op.gm, op.nbytes
        shape = (unit.core, unit.name, op.pipe, op.kind, op.path, op.dtype, op.vop, nbytes > 0,
                 op.m > 0 and op.k > 0 and op.n > 0, op.elements > 0, gm.tensor if gm else None)
        if shape not in valid_shapes:
            found = _op_problems(f"op {i} {op.name!r}", op, graph, cfg)
            if found:
                problems += found
            else:
                valid_shapes.add(shape)
        # ops reuse a few slot combinations (double buffers): check each combination once
        uses = (unit.core, op.reads, op.writes, nbytes if op.kind is dma else 0)
        if uses not in valid_uses:
            found = _slot_problems(f"op {i} {op.name!r}", op, slots)
            if found:
                problems += found
            else:
                valid_uses.add(uses)
        if problems and len(problems) > _MAX_LISTED:
            break

    problems += _check_capacities(graph, cfg)
    if not problems and forward:
        cycle = find_cycle(graph)
        if cycle:
            problems.append("dependency cycle: " + " -> ".join(cycle + cycle[:1]))
    if problems:
        shown = problems[:_MAX_LISTED]
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise GraphError(f"graph {graph.name!r} cannot run on {cfg.meta.name}:\n  " + "\n  ".join(shown) + more)


def _dep_problems(i: int, op, deps, n_ops: int) -> list[str]:
    where, out = f"op {i} {op.name!r}", []
    for d in deps:
        if not 0 <= d < n_ops:
            out.append(f"{where}: depends on op {d}, which does not exist (graph has {n_ops} ops)")
        elif d == i:
            out.append(f"{where}: depends on itself")
    return out


def _op_problems(where: str, op, graph: KernelGraph, cfg: HardwareConfig) -> list[str]:
    """What is wrong with one op's unit, pipe, path, dtype and sizes on this hardware."""
    problems = []
    u = op.unit
    if not 0 <= u.core < cfg.chip.cores:
        problems.append(f"{where}: core {u.core} does not exist on {cfg.meta.name} ({cfg.chip.cores} cores)")
    if u.kind is UnitKind.AIV and not 0 <= u.aiv_index < cfg.chip.aiv_per_core:
        problems.append(f"{where}: unit {u.name} does not exist ({cfg.chip.aiv_per_core} AIV per core)")
    if op.pipe not in PIPES_OF[u.kind]:
        problems.append(f"{where}: pipe {op.pipe} is not a pipe of an {u.kind.value.upper()} "
                        f"(it has {', '.join(PIPES_OF[u.kind])})")
    if op.kind is OpKind.DMA:
        if op.path is None:
            return problems + [f"{where}: a DMA needs a path"]
        spec = PATHS[op.path]
        if getattr(cfg.dma, op.path.value) is None:
            problems.append(f"{where}: path {op.path.value} does not exist on preset {cfg.meta.name} "
                            f"(add it with --set dma.{op.path.value}=\"{{rate_bytes_per_cycle = ..., start_cycles = ...}}\")")
        if spec.unit is not u.kind or spec.pipe is not op.pipe:
            problems.append(f"{where}: path {op.path.value} is driven by the {spec.unit.value.upper()} "
                            f"{spec.pipe}, not {u.kind.value.upper()} {op.pipe}")
        if op.nbytes <= 0:
            problems.append(f"{where}: moves {op.nbytes} bytes (must be > 0)")
        if (spec.src == "gm" or spec.dst == "gm") and op.gm is None:
            problems.append(f"{where}: a {op.path.value} transfer must name its GM tensor region")
        if op.gm is not None and op.gm.tensor not in graph.tensors:
            problems.append(f"{where}: GM tensor {op.gm.tensor!r} is not declared")
    elif op.kind is OpKind.MMAD:
        if not cube_supports(cfg, op.dtype):
            problems.append(f"{where}: the Cube of {cfg.meta.name} has no {op.dtype} mode "
                            f"(it takes {', '.join(cfg.cube.k0)})")
        if min(op.m, op.k, op.n) <= 0:
            problems.append(f"{where}: mmad shape {op.m}x{op.k}x{op.n} must be positive")
    elif op.kind is OpKind.VEC:
        if op.vop not in cfg.vector.cycles_per_repeat:
            problems.append(f"{where}: vector op {op.vop!r} has no cost in the config "
                            f"(known: {', '.join(cfg.vector.cycles_per_repeat)})")
        if op.elements <= 0:
            problems.append(f"{where}: vector op on {op.elements} elements (must be > 0)")
    return problems


def _slot_problems(where: str, op, slots) -> list[str]:
    """What is wrong with the slots one op reads and writes."""
    problems = []
    core = op.unit.core
    for name in op.reads + op.writes:
        slot = slots.get(name)
        if slot is None:
            problems.append(f"{where}: uses slot {name!r}, which is not declared")
        elif slot.unit.core != core:
            problems.append(f"{where}: uses slot {name!r} of core {slot.unit.core} from core {core}")
    if op.writes and op.kind is OpKind.DMA:
        slot = slots.get(op.writes[0])
        if slot is not None and op.nbytes > slot.nbytes:
            problems.append(f"{where}: writes {op.nbytes} B into slot {slot.name!r} of {slot.nbytes} B")
    return problems


def _check_capacities(graph: KernelGraph, cfg: HardwareConfig) -> list[str]:
    per_buffer: dict[tuple, list] = defaultdict(list)
    problems = []
    for slot in graph.slots.values():
        if slot.buffer not in BUFFERS_OF[slot.unit.kind]:
            problems.append(f"slot {slot.name!r}: an {slot.unit.kind.value.upper()} has no {slot.buffer.value.upper()}")
            continue
        per_buffer[(slot.unit, slot.buffer)].append(slot)
    for (unit, buffer), slots in per_buffer.items():
        cap = buffer_capacity(cfg, buffer)
        used = sum(s.nbytes for s in slots)
        if used > cap:
            tiles = ", ".join(f"{s.name} ({s.nbytes} B)" for s in slots[:8])
            if len(slots) > 8:
                tiles += f", ... ({len(slots)} slots)"
            problems.append(f"{buffer.value.upper()} of {unit}: live tiles need {used} B but the buffer holds "
                            f"{cap} B on {cfg.meta.name}: {tiles}")
    return problems
