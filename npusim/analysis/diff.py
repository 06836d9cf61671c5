"""`npusim diff A B`: what changed between two runs, from their traces.

Every number is B minus A. A stall cause "appeared" when a pipe kind (or the critical path) spends
cycles on it in B and none in A, and "vanished" in the opposite case: e.g. the Cube waiting on
`aiv.vector` in A and not in B means the Vector work no longer holds the Cube back.
"""

from __future__ import annotations

from typing import Any

from npusim.analysis.flatten import flatten
from npusim.analysis.summary import run_summary
from npusim.analysis.tracefile import TraceRun
from npusim.report.attribution import Attribution, vector_side
from npusim.report.metrics import TRAFFIC_KEYS, UNIT_KEYS


def _delta(a: float, b: float) -> dict[str, float]:
    return {"a": a, "b": b, "delta": b - a}


def cause_changes(a: dict[str, int], b: dict[str, int]) -> dict[str, Any]:
    """Causes that appeared / vanished, and every cause's cycles in A and B, largest change first."""
    names = sorted(set(a) | set(b), key=lambda c: (-abs(b.get(c, 0) - a.get(c, 0)), c))
    return {"appeared": sorted(set(b) - set(a)), "vanished": sorted(set(a) - set(b)),
            "cycles": {c: _delta(a.get(c, 0), b.get(c, 0)) for c in names}}


def changed_fields(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flattened fields whose values differ (None where a side lacks the field)."""
    fa, fb = flatten(a), flatten(b)
    return {k: {"a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def _side(run: TraceRun) -> dict[str, Any]:
    return {"trace": run.path, "graph": run.graph, "hw": run.hw, "cycles": run.cycles, "ops": len(run.ops)}


def stall_verdict(a: int, b: int) -> str:
    """How the Vector-Cube stall changed: vanished (B at most 10 % of A), appeared (the reverse), shrank,
    grew, or unchanged (within 10 %)."""
    if a == b == 0 or (a and 0.9 <= b / a <= 1.1):
        return "unchanged"
    if b <= 0.1 * a:
        return "vanished"
    if a <= 0.1 * b:
        return "appeared"
    return "shrank" if b < a else "grew"


def diff_runs(a: TraceRun, b: TraceRun) -> dict[str, Any]:
    sa, sb = run_summary(a), run_summary(b)
    units, causes = {}, {"critical_path": cause_changes(sa["critical_path"], sb["critical_path"])}
    for key in UNIT_KEYS:
        ua, ub = sa["units"][key], sb["units"][key]
        if not (ua["instances"] or ub["instances"]):
            continue
        units[key] = {"busy_cycles": _delta(ua["busy_cycles"], ub["busy_cycles"]),
                      "utilization": _delta(ua["utilization"], ub["utilization"]),
                      "instances": _delta(ua["instances"], ub["instances"])}
        causes[key] = cause_changes(ua["waiting_on"], ub["waiting_on"])
    ta, tb = sa["traffic"], sb["traffic"]
    roles = {role: {k: _delta(va[k], tb["by_role"][role][k]) for k in TRAFFIC_KEYS}
             for role, va in ta["by_role"].items() if any(va.values()) or any(tb["by_role"][role].values())}
    # the stall between Cube ops, not the pipeline fill before the first one
    stall_a = vector_side(Attribution(a.cfg, a.ops).waiting_on(steady=True).get("cube", {}))
    stall_b = vector_side(Attribution(b.cfg, b.ops).waiting_on(steady=True).get("cube", {}))
    return {
        "vector_cube_stall": {**_delta(stall_a, stall_b), "verdict": stall_verdict(stall_a, stall_b)},
        "a": _side(a),
        "b": _side(b),
        "makespan": {**_delta(a.cycles, b.cycles), "ratio": b.cycles / a.cycles,
                     "time_us": _delta(a.cycles / a.clock_hz * 1e6, b.cycles / b.clock_hz * 1e6)},
        "config": changed_fields(a.cfg.to_data(), b.cfg.to_data()),
        "kernel": changed_fields(a.kernel, b.kernel),
        "units": units,
        "causes": causes,
        "traffic": {"total": {k: _delta(ta[k], tb[k]) for k in TRAFFIC_KEYS}, "by_role": roles},
    }
