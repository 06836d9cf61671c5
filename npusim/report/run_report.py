"""The run report: the `--json` object and the rich terminal summary, both from one RunResult."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from npusim.report.attribution import Attribution
from npusim.report.metrics import UNIT_KEYS, flops, traffic_summary, unit_summary
from npusim.sim.run import RunResult
from npusim.units import format_bytes


def run_json(res: RunResult) -> dict[str, Any]:
    """The run's JSON object. Fields are defined in docs/metrics.md; only `wall_s` varies between
    identical runs."""
    ops = res.records.ops
    clock = res.cfg.chip.clock_hz
    time_s = res.cycles / clock
    fl = flops(ops)
    num = res.numerics
    attribution = Attribution(res.cfg, ops)
    units = unit_summary(ops, res.cycles)
    waiting = attribution.waiting_on()
    for key, u in units.items():
        u["waiting_on"] = waiting.get(key, {})
    return {
        "kernel": res.graph.meta.get("kernel", res.graph.name),
        "graph": res.graph.name,
        "hw": res.cfg.meta.name,
        "meta": res.graph.meta,
        "seed": res.seed,
        "cycles": res.cycles,
        "time_us": time_s * 1e6,
        "ops": len(ops),
        "wall_s": round(res.wall_s, 3),
        "clock_hz": clock,
        "achieved_tflops": fl / time_s / 1e12 if time_s else 0.0,
        "peak_bf16_tflops": res.cfg.peak_bf16_flops / 1e12,
        "units": units,
        "critical_path": attribution.critical_path(),
        "traffic": {**traffic_summary(ops, res.records.writebacks),
                    "hbm_peak_bytes_per_cycle": round(res.hbm_peak_bytes_per_cycle, 3),
                    "hbm_bandwidth_bytes_per_cycle": round(res.cfg.hbm_bytes_per_cycle, 3)},
        "numerics": None if num is None else {
            "exact": num.exact, "mismatches": num.mismatches, "elements": num.elements,
            "rel_l2_vs_fp64": num.rel_l2_vs_fp64, "max_abs_vs_fp64": num.max_abs_vs_fp64},
    }


def render_run(doc: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{doc['graph']}[/] on [bold]{doc['hw']}[/]: {doc['cycles']:,} cycles = "
                  f"{doc['time_us']:.2f} µs, {doc['ops']:,} ops (simulated in {doc['wall_s']:.2f} s)")
    console.print(f"achieved {doc['achieved_tflops']:.1f} TFLOPS of {doc['peak_bf16_tflops']:.1f} bf16 peak "
                  f"({100 * doc['achieved_tflops'] / doc['peak_bf16_tflops']:.1f} %)")
    t = Table(title="pipes", title_justify="left")
    for col in ("pipe", "instances", "busy cycles", "utilization"):
        t.add_column(col, justify="right" if col != "pipe" else "left")
    for key in UNIT_KEYS:
        u = doc["units"][key]
        if u["instances"]:
            t.add_row(key.upper(), str(u["instances"]), f"{u['busy_cycles']:,}", f"{100 * u['utilization']:.1f} %")
    console.print(t)
    _render_causes(doc, console)
    tr = doc["traffic"]
    t = Table(title="GM traffic", title_justify="left")
    for col in ("role", "HBM read", "HBM write", "L2 read", "L2 write"):
        t.add_column(col, justify="right" if col != "role" else "left")
    for role, v in tr["by_role"].items():
        if any(v.values()):
            t.add_row(role, *(format_bytes(v[k]) for k in ("hbm_read_bytes", "hbm_write_bytes",
                                                             "l2_read_bytes", "l2_write_bytes")))
    t.add_row("[bold]total", *(f"[bold]{format_bytes(tr[k])}" for k in ("hbm_read_bytes", "hbm_write_bytes",
                                                                         "l2_read_bytes", "l2_write_bytes")))
    console.print(t)
    num = doc["numerics"]
    if num is None:
        console.print("numerics: [dim]not checked (--no-numerics, or the graph names no reference)[/]")
    else:
        verdict = "[green]exact[/]" if num["exact"] else f"[red]{num['mismatches']:,} of {num['elements']:,} elements differ[/]"
        extra = ""
        if num["rel_l2_vs_fp64"] is not None:
            extra = f"; vs FP64: rel L2 {num['rel_l2_vs_fp64']:.3e}, max abs {num['max_abs_vs_fp64']:.3e}"
        console.print(f"numerics vs reference of the same algorithm: {verdict}{extra}")


def _top(causes: dict[str, int], n: int = 4) -> str:
    total = sum(causes.values()) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(causes.items())[:n]) or "-"


def _render_causes(doc: dict[str, Any], console: Console) -> None:
    cp = doc["critical_path"]
    t = Table(title="critical path (sums to the makespan) and idle time by cause", title_justify="left")
    t.add_column("what")
    t.add_column("cycles", justify="right")
    t.add_column("most expensive causes first")
    t.add_row("critical path", f"{sum(cp.values()):,}", _top(cp, 6))
    for key in UNIT_KEYS:
        u = doc["units"][key]
        if u["instances"] and u["waiting_on"]:
            t.add_row(f"{key.upper()} idle, waiting on", f"{sum(u['waiting_on'].values()):,}", _top(u["waiting_on"]))
    console.print(t)
