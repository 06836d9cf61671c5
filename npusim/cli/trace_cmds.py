"""`npusim inspect`, `npusim diff` and `npusim plot`: reading runs back from their files.

The numbers come from npusim.analysis (pure functions of the trace's records or the sweep's rows);
this module only renders them. The lead registers the commands in npusim/cli/main.py:
    app.command("inspect")(inspect_cmd); app.command("diff")(diff_cmd); app.command("plot")(plot_cmd)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from npusim.analysis.diff import diff_runs
from npusim.analysis.inspect import inspect_run
from npusim.analysis.table import read_rows
from npusim.analysis.tracefile import open_trace
from npusim.analysis.window import make_window
from npusim.cli import common
from npusim.errors import NpusimError
from npusim.report.metrics import UNIT_KEYS
from npusim.units import format_bytes

TRACE_ARG = typer.Argument(..., help="Chrome trace JSON written by `npusim run ... --trace FILE`")
CORE = typer.Option(None, "--core", help="only this AI-core group (repeatable: --core 0 --core 3); default: all cores")
PLOT_CORE = typer.Option(None, "--core", help="draw the pipes of this AI-core group (repeatable: --core 0 --core 3); "
                                              "default: the first core that ran an op")
FROM = typer.Option(None, "--from", help="window start (cycles; default 0)")
TO = typer.Option(None, "--to", help="window end (cycles; default: the makespan)")

# Busy fraction of a timeline cell -> character: blank when idle, full block when busy all the time.
_RAMP = ((0.0, " "), (0.25, "░"), (0.5, "▒"), (0.75, "▓"), (1.0, "█"))
_PIPE_STYLE = {"MTE2": "blue", "MTE1": "cyan", "CUBE": "red", "FIXP": "magenta", "VECTOR": "green",
               "MTE3": "yellow"}
_LABEL_WIDTH = 15
JSON_TIMELINE_COLUMNS = 64


def _emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")


def _top(causes: dict[str, int], n: int = 3) -> str:
    total = sum(causes.values()) or 1
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in list(causes.items())[:n]) or "-"


def _ramp(fraction: float) -> str:
    return next((ch for limit, ch in _RAMP if fraction <= limit), _RAMP[-1][1])


def _timeline_columns(console: Console) -> int:
    # Fits the terminal, at 80 columns too; wider terminals get more cells, up to a readable limit.
    return max(16, min(console.width, 140) - _LABEL_WIDTH - 1)


# ---------------------------------------------------------------------------------------------- inspect


@common.user_errors
def inspect_cmd(
    trace: Path = TRACE_ARG,
    core: Optional[list[int]] = CORE,
    lo: Optional[int] = FROM,
    hi: Optional[int] = TO,
    top: int = typer.Option(5, "--top", help="how many of the longest stalls to list"),
    json_out: bool = common.JSON,
) -> None:
    """Busy and idle time per pipe, idle cycles by cause, the critical path, the longest stalls and a
    timeline, for a window of a run, from its trace file alone."""
    if top < 0:
        raise NpusimError(f"--top {top}: must be 0 or more")
    run = open_trace(trace)
    window = make_window(run, core, lo, hi)
    console = Console()
    # JSON output must not depend on the terminal it was asked from.
    doc = inspect_run(run, window, top=top, columns=JSON_TIMELINE_COLUMNS if json_out else _timeline_columns(console))
    if json_out:
        _emit_json(doc)
    else:
        render_inspect(doc, console)


def render_inspect(doc: dict[str, Any], console: Console) -> None:
    w = doc["window"]
    cores = "all cores" if w["cores"] is None else "core " + ", ".join(map(str, w["cores"]))
    console.print(f"trace {doc['trace']}")
    console.print(f"[bold]{doc['graph']}[/] on [bold]{doc['hw']}[/]: {doc['cycles']:,} cycles = "
                  f"{doc['cycles'] / doc['clock_hz'] * 1e6:.2f} µs, {doc['ops']:,} ops")
    console.print(f"window: cycles {w['from']:,} to {w['to']:,} ({w['cycles']:,} cycles), {cores}")
    t = Table(title="pipes (busy and idle cycles summed over the pipes of each kind)", title_justify="left")
    for col in ("pipe", "n", "busy", "idle", "util", "idle waiting on"):
        t.add_column(col, justify="left" if col in ("pipe", "idle waiting on") else "right")
    for key in UNIT_KEYS:
        u = doc["units"][key]
        if u["instances"]:
            t.add_row(key.upper(), str(u["instances"]), f"{u['busy_cycles']:,}", f"{u['idle_cycles']:,}",
                      f"{100 * u['utilization']:.1f}%", _top(u["waiting_on"]))
    console.print(t)
    cp = doc["critical_path"]
    title = f"critical path (chip-wide): {sum(cp.values()):,} cycles in the window"
    t = Table(title=title, title_justify="left", min_width=len(title))
    t.add_column("cause")
    t.add_column("cycles", justify="right")
    t.add_column("share", justify="right")
    for cause, cycles in cp.items():
        t.add_row(cause, f"{cycles:,}", f"{100 * cycles / (sum(cp.values()) or 1):.1f}%")
    console.print(t)
    _render_stalls(doc["stalls"], console)
    _render_timeline(doc["timeline"], console)


def _op(o: dict[str, Any] | None) -> str:
    return "-" if o is None else f"{o['name']} (#{o['op']})"


def _render_stalls(stalls: list[dict[str, Any]], console: Console) -> None:
    if not stalls:
        console.print("longest stalls: none between two ops in this window")
        return
    t = Table(title="longest stalls between two ops on one pipe", title_justify="left")
    t.add_column("pipe")
    t.add_column("cycles", justify="right")
    t.add_column("between the ops, and what the second waited on")
    for s in stalls:
        w = s["waited_on"]
        waited = "its pipe only" if w is None else \
            f"{_op(w)} on core {w['core']} {w['unit'].upper()} {w['pipe']} (+{w['edge_cycles']} {w['edge']})"
        t.add_row(f"c{s['core']} {s['unit'].upper()} {s['pipe']}", f"{s['cycles']:,}\n{s['from']:,}-{s['to']:,}",
                  f"{_op(s['before'])} -> {_op(s['after'])}\nwaited on {waited}\ncauses: {_top(s['causes'])}")
    console.print(t)


def _render_timeline(tl: dict[str, Any], console: Console) -> None:
    console.print(f"timeline, {tl['cycles_per_column']:,.0f} cycles per cell; busy: "
                  "░ ≤25% ▒ ≤50% ▓ ≤75% █ >75%")
    for row in tl["rows"]:
        line = Text(f"{row['label']:<{_LABEL_WIDTH}.{_LABEL_WIDTH}}")
        line.append("".join(_ramp(f) for f in row["busy"]), style=_PIPE_STYLE.get(row["pipe"], ""))
        console.print(line, no_wrap=True, overflow="crop")
    start, end = f"{tl['from']:,}", f"{tl['to']:,}"
    gap = max(1, tl["columns"] - len(start) - len(end))
    console.print(" " * _LABEL_WIDTH + start + " " * gap + end, no_wrap=True, overflow="crop")


# ------------------------------------------------------------------------------------------------- diff


@common.user_errors
def diff_cmd(
    a: Path = typer.Argument(..., help="trace A (the baseline)"),
    b: Path = typer.Argument(..., help="trace B (the variant); every delta is B minus A"),
    json_out: bool = common.JSON,
) -> None:
    """Two runs side by side: makespan, per-pipe busy cycles, stall causes that appeared or vanished,
    GM traffic by role, and the config fields that differ."""
    doc = diff_runs(open_trace(a), open_trace(b))
    if json_out:
        _emit_json(doc)
    else:
        render_diff(doc, Console())


def _signed(v: float) -> str:
    return f"{v:+,}" if isinstance(v, int) else f"{v:+,.3g}"


def _value(v: Any) -> str:
    """Config values as written in TOML: strings bare, booleans lowercase, a missing field as '-'."""
    return "-" if v is None else v if isinstance(v, str) else json.dumps(v)


def render_diff(doc: dict[str, Any], console: Console) -> None:
    for side in ("a", "b"):
        s = doc[side]
        console.print(f"{side.upper()}: {s['trace']} ({s['graph']} on {s['hw']}, {s['cycles']:,} cycles, {s['ops']:,} ops)")
    m = doc["makespan"]
    console.print(f"[bold]makespan[/]: {m['a']:,} -> {m['b']:,} cycles ({_signed(m['delta'])}, B/A = {m['ratio']:.3f}; "
                  f"{m['time_us']['a']:.2f} -> {m['time_us']['b']:.2f} µs)")
    st = doc["vector_cube_stall"]
    console.print(f"[bold]Vector-Cube stall[/] (Cube idle cycles between Cube ops waiting on AIV work or workspace "
                  f"transfers, all cores): {st['a']:,} -> {st['b']:,}: [bold]{st['verdict']}[/]")
    for title, changes in (("config fields that differ", doc["config"]), ("kernel fields that differ", doc["kernel"])):
        if changes:
            t = Table(title=title, title_justify="left")
            for col in ("field", "A", "B"):
                t.add_column(col)
            for k, v in changes.items():
                t.add_row(k, _value(v["a"]), _value(v["b"]))
            console.print(t)
    t = Table(title="pipes: busy cycles (summed over pipes of each kind)", title_justify="left")
    for col in ("pipe", "A", "B", "B - A", "util A", "util B"):
        t.add_column(col, justify="left" if col == "pipe" else "right")
    for key, u in doc["units"].items():
        bc, ut = u["busy_cycles"], u["utilization"]
        t.add_row(key.upper(), f"{bc['a']:,}", f"{bc['b']:,}", _signed(bc["delta"]),
                  f"{100 * ut['a']:.1f}%", f"{100 * ut['b']:.1f}%")
    console.print(t)
    t = Table(title="stall causes (idle cycles per pipe kind; critical path cycles)", title_justify="left")
    t.add_column("where")
    t.add_column("what changed from A to B")
    for where, c in doc["causes"].items():
        if not c["cycles"]:
            continue
        lines = [f"{label}: {', '.join(c[key])}" for key, label in (("appeared", "appeared"), ("vanished", "vanished"))
                 if c[key]]
        changes = ", ".join(f"{k} {_signed(v['delta'])}" for k, v in list(c["cycles"].items())[:3] if v["delta"])
        lines.append(f"largest changes: {changes or 'none'}")
        t.add_row("critical path" if where == "critical_path" else f"{where.upper()} idle", "\n".join(lines))
    console.print(t)
    t = Table(title="GM traffic by role", title_justify="left")
    for col in ("role", "bytes", "A", "B", "B - A"):
        t.add_column(col, justify="left" if col in ("role", "bytes") else "right")
    for role, keys in (*doc["traffic"]["by_role"].items(), ("total", doc["traffic"]["total"])):
        for key, v in keys.items():
            if v["a"] or v["b"]:
                t.add_row(role, key.removesuffix("_bytes").replace("_", " "), format_bytes(v["a"]),
                          format_bytes(v["b"]), ("+" if v["delta"] > 0 else "") + format_bytes(v["delta"]))
    console.print(t)


# ------------------------------------------------------------------------------------------------- plot


@common.user_errors
def plot_cmd(
    file: Path = typer.Argument(..., help="a trace (.json: Gantt chart of the pipes) or a sweep CSV "
                                          "(.csv: speedup of --b over --a across the grid)"),
    out: Path = typer.Option(..., "-o", "--out", help="PNG file to write"),
    core: Optional[list[int]] = PLOT_CORE,
    lo: Optional[int] = FROM,
    hi: Optional[int] = TO,
    by: Optional[str] = typer.Option(None, "--by", help="sweep: compare two values of this column: "
                                                        "method (default) or a grid axis, e.g. l2.enabled"),
    a: Optional[str] = typer.Option(None, "--a", help="sweep: the baseline value (default: dequant)"),
    b: Optional[str] = typer.Option(None, "--b", help="sweep: the value whose speedup is drawn (default: msd)"),
    metric: Optional[str] = typer.Option(None, "--metric", help="sweep: time column to compare "
                                                                "(default: cycles; speedup = A / B)"),
) -> None:
    """Draw a trace as a Gantt chart of its pipes (idle time shaded by cause), or a sweep CSV as the
    speedup of one method (or axis value) over another across the grid."""
    # matplotlib is imported here, on use: it costs ~0.5 s that no other command should pay.
    from npusim.analysis.figures import save_png

    if out.suffix.lower() != ".png":
        raise NpusimError(f"-o {out}: the output must be a .png file")
    suffix = file.suffix.lower()
    if suffix == ".json":
        if any(v is not None for v in (by, a, b, metric)):
            raise NpusimError("--by, --a, --b and --metric apply to sweep CSVs, not to traces")
        from npusim.analysis.gantt import gantt_figure
        run = open_trace(file)
        fig = gantt_figure(run, make_window(run, core, lo, hi))
    elif suffix == ".csv":
        if core or lo is not None or hi is not None:
            raise NpusimError("--core, --from and --to apply to traces, not to sweep CSVs")
        from npusim.analysis.sweep_plot import speedup_figure, speedup_table
        table = speedup_table(read_rows(file), by or "method", a or "dequant", b or "msd", metric or "cycles")
        fig = speedup_figure(table, title=f"{file.name}: speedup of {table.b} over {table.a}")
    else:
        raise NpusimError(f"{file}: expected a trace (.json) or a sweep CSV (.csv)")
    save_png(fig, out)
    Console().print(f"plot written to {out}")
