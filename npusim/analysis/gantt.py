"""A Gantt chart of the pipes of chosen cores over a cycle window: ops as solid bars coloured by pipe,
idle time shaded by what it was waiting on (npusim.report.attribution causes, resolved in time by
npusim.analysis.idle.cause_spans)."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from npusim.analysis.figures import LATENCY_COLORS, PIPE_COLORS, new_figure
from npusim.analysis.idle import cause_spans, lane_gaps
from npusim.analysis.timeline import unit_label
from npusim.analysis.tracefile import TraceRun
from npusim.analysis.window import Lane, Window, lanes
from npusim.errors import NpusimError
from npusim.hw.records import OpRecord
from npusim.report.attribution import Attribution

MAX_LANES = 64  # beyond this the rows are unreadable; ask for fewer cores instead
SEPARATED_OPS = 80  # up to this many ops in a row, white edges show where one op ends and the next starts


def cause_group(cause: str) -> str:
    """'aic.mte2:weight' -> 'aic.mte2': one legend entry per pipe waited on, not per byte role."""
    return cause.split(":", 1)[0]


def cause_style(group: str) -> dict:
    if group in LATENCY_COLORS:
        return {"facecolor": LATENCY_COLORS[group], "alpha": 0.35, "hatch": ""}
    kind, _, pipe = group.partition(".")
    return {"facecolor": PIPE_COLORS.get(pipe.upper(), "#999999"), "alpha": 0.3,
            "hatch": "//" if kind == "aic" else "\\\\"}


def cause_label(group: str) -> str:
    names = {"hbm": "HBM bandwidth share", "flag": "flag latency", "buffer": "buffer slot release",
             "start": "kernel start"}
    return f"idle: {names.get(group, group.upper().replace('.', ' '))}"


def _draw_busy(ax: Axes, y: int, pipe: str, ops: list[OpRecord], window: Window) -> bool:
    bars = [(max(r.start, window.lo), min(r.end, window.hi) - max(r.start, window.lo))
            for r in ops if r.end > window.lo and r.start < window.hi]
    if bars:
        separated = len(bars) <= SEPARATED_OPS
        ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=PIPE_COLORS[pipe],
                       edgecolor="white" if separated else "none", linewidth=0.5 if separated else 0)
    return bool(bars)


def _draw_idle(ax: Axes, y: int, att: Attribution, lane: Lane, ops: list[OpRecord], window: Window,
               step: int) -> set[str]:
    spans: dict[str, list[tuple[int, int]]] = {}
    for gap in lane_gaps(lane, ops, window):
        for a, b, cause in cause_spans(att, gap, step):
            spans.setdefault(cause_group(cause), []).append((a, b - a))
    for group, pieces in spans.items():
        style = cause_style(group)
        ax.broken_barh(pieces, (y - 0.3, 0.6), facecolors=style["facecolor"], alpha=style["alpha"],
                       hatch=style["hatch"], edgecolor="none")
    return set(spans)


def _legend(ax: Axes, busy_pipes: set[str], idle_groups: set[str]) -> None:
    handles = [Patch(facecolor=PIPE_COLORS[p], label=f"busy: {p}") for p in PIPE_COLORS if p in busy_pipes]
    for group in sorted(idle_groups):
        style = cause_style(group)
        handles.append(Patch(facecolor=style["facecolor"], alpha=style["alpha"], hatch=style["hatch"],
                             label=cause_label(group)))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
              title="ops and idle time by cause", title_fontsize="small")


def gantt_figure(run: TraceRun, window: Window, resolution: int = 600) -> Figure:
    """One row per pipe of `window.cores` (None: the first core that ran an op). Idle time is
    attributed in pieces of window / `resolution` cycles, about a pixel each."""
    cores = window.cores if window.cores is not None else tuple(run.cores_with_ops()[:1])
    chosen = lanes(run.ops, cores)
    if len(chosen) > MAX_LANES:
        raise NpusimError(f"{len(chosen)} pipes to draw: choose cores with at most {MAX_LANES} pipes "
                          f"between them with --core (e.g. --core 0 --core 1)")
    att = Attribution(run.cfg, run.ops)
    step = max(1, window.length // resolution)
    fig = new_figure(12, 1.6 + 0.38 * len(chosen))
    ax = fig.add_subplot()
    busy_pipes: set[str] = set()
    idle_groups: set[str] = set()
    for y, (lane, ops) in enumerate(chosen.items()):
        if _draw_busy(ax, y, lane[2], ops, window):
            busy_pipes.add(lane[2])
        idle_groups |= _draw_idle(ax, y, att, lane, ops, window, step)
    ax.set_yticks(range(len(chosen)))
    ax.set_yticklabels([f"core {c} {unit_label(u)} {p}" for c, u, p in chosen])
    ax.set_ylim(len(chosen) - 0.5, -0.5)
    ax.set_xlim(window.lo, window.hi)
    ax.set_xlabel(f"cycle (AI-core clock {run.clock_hz / 1e9:g} GHz)")
    ax.set_ylabel("pipe")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{run.graph} on {run.hw}: cycles {window.lo:,}-{window.hi:,} of {run.cycles:,}, "
                 f"core{'s' if len(cores) > 1 else ''} {', '.join(map(str, cores))}")
    _legend(ax, busy_pipes, idle_groups)
    return fig
