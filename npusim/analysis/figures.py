"""Matplotlib without a display: figures are built with the object API on the Agg canvas (no pyplot
global state, safe in threads and on headless machines) and saved atomically as PNG."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from npusim.errors import NpusimError
from npusim.io import atomic_open

# One colour per pipe, reused for the idle time spent waiting on that pipe.
PIPE_COLORS = {"MTE2": "#1f77b4", "MTE1": "#17becf", "CUBE": "#d62728", "FIXP": "#9467bd",
               "VECTOR": "#2ca02c", "MTE3": "#ff7f0e"}
LATENCY_COLORS = {"hbm": "#8c564b", "flag": "#7f7f7f", "buffer": "#e377c2", "start": "#bcbd22"}


def new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path) -> None:
    if Path(path).suffix.lower() != ".png":
        raise NpusimError(f"-o {path}: the output must be a .png file")
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
