"""`npusim inspect`: what the pipes did in a window of a run, from its trace.

For the whole run (no --core, no window) the busy cycles, idle causes and critical path are those of
npusim.report, i.e. the run JSON's. For a window, each op's busy time and each stall are cut to it and
the critical path is the part of the chip-wide critical path that lies inside it (Attribution.blame on
the window), so the numbers of adjacent windows add up to the whole run's.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from npusim.analysis.idle import Gap, gap_causes, lane_gaps, sorted_causes, waited_on
from npusim.analysis.summary import run_summary
from npusim.analysis.timeline import timeline
from npusim.analysis.tracefile import TraceRun
from npusim.analysis.window import Window, clipped, lanes
from npusim.hw.records import OpRecord
from npusim.report.attribution import Attribution
from npusim.report.metrics import UNIT_KEYS, unit_summary


def op_brief(r: OpRecord | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"op": r.index, "name": r.name, "core": r.core, "unit": r.unit, "pipe": r.pipe,
            "start": r.start, "end": r.end}


def window_units(run: TraceRun, att: Attribution, window: Window) -> dict[str, dict[str, Any]]:
    """Per pipe kind within the window: busy_cycles, instances (pipes of the chosen cores that ran
    an op in the run), utilization = busy / (instances x window), idle_cycles = instances x window -
    busy, and waiting_on (idle cycles by cause; idle after a pipe's last op is waiting on nothing)."""
    if window.is_whole_run(run.cycles):
        units = run_summary(run, att)["units"]
        length = run.cycles
    else:
        length = window.length
        units = unit_summary(clipped(run.ops, window), length)
        # A pipe with no op inside the window was still there, idle: count it like the whole-run summary.
        instances: dict[str, int] = defaultdict(int)
        for _, _, pipe in lanes(run.ops, window.cores):
            instances[pipe.lower()] += 1
        waiting = window_waiting_on(att, run, window)
        for key, u in units.items():
            u["instances"] = instances[key]
            u["utilization"] = u["busy_cycles"] / (u["instances"] * length) if u["instances"] else 0.0
            u["waiting_on"] = waiting.get(key, {})
    for u in units.values():
        u["idle_cycles"] = u["instances"] * length - u["busy_cycles"]
    return units


def window_waiting_on(att: Attribution, run: TraceRun, window: Window) -> dict[str, dict[str, int]]:
    per_pipe: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for lane, ops in lanes(run.ops, window.cores).items():
        out = per_pipe[lane[2].lower()]
        for gap in lane_gaps(lane, ops, window):
            for cause, cycles in gap_causes(att, gap).items():
                out[cause] += cycles
    return {pipe: sorted_causes(v) for pipe, v in per_pipe.items()}


def window_critical_path(run: TraceRun, att: Attribution, window: Window) -> dict[str, int]:
    """The chip-wide critical path's cycles inside the window, by cause (--core does not change it:
    the critical path is what made the whole run as long as it was)."""
    if window.lo == 0 and window.hi >= run.cycles:
        return att.critical_path()
    last = max(run.ops, key=lambda r: (r.end, -r.index))
    out: dict[str, int] = defaultdict(int)
    att.blame(window.lo, min(window.hi, last.end), last, None, out)
    return sorted_causes(out)


def longest_stalls(run: TraceRun, att: Attribution, window: Window, top: int) -> list[dict[str, Any]]:
    """The `top` longest gaps between two ops on any chosen lane in the window, with the ops on both
    sides, the op the next one waited on and the gap's causes. The wait before a pipe's first op (the
    pipeline filling) has no op before it and is not listed; it is in the idle cycles by cause. Ties go
    to the earlier gap, then to pipeline-view order."""
    gaps: list[tuple[int, Gap]] = []
    for rank, (lane, ops) in enumerate(lanes(run.ops, window.cores).items()):
        gaps.extend((rank, g) for g in lane_gaps(lane, ops, window) if g.before is not None)
    gaps.sort(key=lambda rg: (-rg[1].cycles, rg[1].start, rg[0]))
    out = []
    for _, g in gaps[:top]:
        pred, edge = waited_on(att, g.after)
        core, unit, pipe = g.lane
        out.append({"core": core, "unit": unit, "pipe": pipe, "from": g.start, "to": g.end, "cycles": g.cycles,
                    "before": op_brief(g.before), "after": op_brief(g.after),
                    "waited_on": None if pred is None else {**op_brief(pred), "edge": edge,
                                                            "edge_cycles": g.after.latency},
                    "causes": sorted_causes(gap_causes(att, g))})
    return out


def inspect_run(run: TraceRun, window: Window, *, top: int = 5, columns: int = 64) -> dict[str, Any]:
    att = Attribution(run.cfg, run.ops)
    units = window_units(run, att, window)
    return {
        "trace": run.path,
        "graph": run.graph,
        "kernel": run.kernel,
        "hw": run.hw,
        "clock_hz": run.clock_hz,
        "seed": run.seed,
        "cycles": run.cycles,
        "ops": len(run.ops),
        "window": window.as_dict(),
        "units": {k: units[k] for k in UNIT_KEYS},
        "critical_path": window_critical_path(run, att, window),
        "stalls": longest_stalls(run, att, window, top),
        "timeline": timeline(run.ops, window, columns),
    }
