"""`npusim sweep`: a grid of runs to one CSV, on a local process pool or a Dask cluster, resumable.

The lead registers it in npusim/cli/main.py: app.command("sweep")(sweep_cmd)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from npusim.analysis.grid import parse_grid
from npusim.analysis.runners import DaskRunner, PoolRunner, SerialRunner
from npusim.analysis.sweep import SweepSpec, execute, prepare
from npusim.cli import common
from npusim.errors import NpusimError
from npusim.kernels.registry import kernel as kernel_spec


def default_jobs() -> int:
    return min(2, os.cpu_count() or 1)


def _methods(values: Optional[list[str]]) -> tuple[str, ...] | None:
    if not values:
        return None
    out = tuple(dict.fromkeys(m.strip() for v in values for m in v.split(",") if m.strip()))
    if not out:
        raise NpusimError("--method: give a method name, e.g. --method msd")
    return out


@common.user_errors
def sweep_cmd(
    grid: list[str] = typer.Option(..., "--grid", metavar="NAME=V1,V2,...",
                                   help="an axis of the grid (repeatable): a kernel option, e.g. --grid m=1,4,16,64, "
                                        "or a config field with its unit, e.g. --grid hbm.bandwidth=\"0.8 TB/s,1.6 TB/s\"; "
                                        "one value fixes an option, e.g. --grid k=4096"),
    out: Path = typer.Option(..., "-o", "--out", help="CSV file, one row per point; an existing file from the "
                                                      "same sweep is resumed (finished points are not re-run)"),
    kernel: str = typer.Option("gemm", "--kernel", help="kernel to sweep"),
    method: Optional[list[str]] = typer.Option(None, "--method", help="run only these methods (repeatable or "
                                                                     "comma-separated; default: every method the "
                                                                     "point's config supports)"),
    hw: str = common.HW,
    overrides: Optional[list[str]] = common.SET,
    seed: int = common.SEED,
    numerics: bool = typer.Option(False, "--numerics/--no-numerics",
                                  help="also compute and check the numbers (slower; default: timing only)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="local worker processes (default: min(2, CPU count)); "
                                                            "1 runs every point in this process"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", metavar="tcp://HOST:PORT",
                                            help="run the points on this running Dask scheduler's workers "
                                                 "instead of locally (each worker needs npusim installed)"),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="seconds to wait for the Dask "
                                                                         "scheduler before giving up"),
    json_out: bool = typer.Option(False, "--json", help="print a one-object JSON summary on stdout"),
) -> None:
    """Run a kernel over a grid of kernel options and config fields; one CSV row per point and method."""
    if scheduler is not None and jobs is not None:
        raise NpusimError("--jobs sets local workers; with --scheduler the cluster's workers run the points")
    spec = SweepSpec(kernel=kernel, axes=parse_grid(grid, kernel_spec(kernel)), hw=hw,
                     overrides=tuple(overrides or ()), methods=_methods(method), seed=seed, numerics=numerics)
    if scheduler is not None:
        runner = DaskRunner(scheduler=scheduler, timeout_s=connect_timeout)
    else:
        n = default_jobs() if jobs is None else jobs
        runner = SerialRunner() if n == 1 else PoolRunner(n)
    prepared = prepare(spec, out)  # every user error surfaces here, before the progress bar
    if isinstance(runner, DaskRunner) and prepared.todo:
        runner.connect()
    with Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("sweep", total=None)
        outcome = execute(prepared, runner, progress=lambda done, total: bar.update(task, completed=done, total=total))
    summary = {"out": str(out), "rows": len(outcome.rows), "ran": outcome.ran, "resumed": outcome.resumed,
               "failed": outcome.failed}
    if json_out:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        return
    console = Console()
    console.print(f"{summary['rows']} rows in {out} ({outcome.ran} run now, {outcome.resumed} kept from an "
                  f"earlier run, {outcome.failed} failed)")
    for row in [r for r in outcome.rows if r["error"]][:3]:
        console.print(f"  point {row['point']} {escape(row['method'])}: [red]{escape(row['error'])}[/]", highlight=False)
