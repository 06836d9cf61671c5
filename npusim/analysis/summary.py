"""The run-level numbers of a trace, computed by npusim.report exactly as the run JSON computes them:
per pipe kind busy cycles, instances, utilisation and idle cycles by cause; the critical path; traffic."""

from __future__ import annotations

from typing import Any

from npusim.analysis.tracefile import TraceRun
from npusim.report.attribution import Attribution
from npusim.report.metrics import traffic_summary, unit_summary


def run_summary(run: TraceRun, att: Attribution | None = None) -> dict[str, Any]:
    att = att if att is not None else Attribution(run.cfg, run.ops)
    units = unit_summary(run.ops, run.cycles)
    waiting = att.waiting_on()
    for key, u in units.items():
        u["waiting_on"] = waiting.get(key, {})
    return {"cycles": run.cycles, "units": units, "critical_path": att.critical_path(),
            "traffic": traffic_summary(run.ops, run.writebacks)}
