"""Options shared by commands, and the run-and-report path every `run` subcommand ends in."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from npusim.config import HardwareConfig, load_config
from npusim.errors import NpusimError
from npusim.graph.kernel_graph import KernelGraph
from npusim.report.run_report import render_run, run_json
from npusim.sim.run import simulate
from npusim.trace.chrome import save_trace

HW = typer.Option("910b", "--hw", help="hardware preset name (see `npusim presets`) or path to a TOML config")
SET = typer.Option(None, "--set", metavar="PATH=VALUE",
                   help="override a config field, e.g. --set hbm.bandwidth=\"3.2 TB/s\"; repeatable")
SEED = typer.Option(0, "--seed", help="seed for the input data (same seed, same bytes out)")
TRACE = typer.Option(None, "--trace", help="write a Chrome trace (Perfetto, chrome://tracing) to this file")
JSON = typer.Option(False, "--json", help="print one JSON object on stdout instead of the summary")
NO_NUMERICS = typer.Option(False, "--no-numerics", help="timing only: skip the arrays (faster, numerics = null)")


def user_errors(fn):
    """Turn a user error raised anywhere below a command into one message on stderr and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NpusimError as exc:
            Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
    return wrapper


def config(hw: str, overrides: Optional[list[str]]) -> HardwareConfig:
    return load_config(hw, overrides or [])


def run_and_report(graph: KernelGraph, cfg: HardwareConfig, *, seed: int, trace: Optional[Path],
                   json_out: bool, numerics: bool) -> dict:
    if trace is not None and not trace.parent.is_dir():
        # Fail before a long simulation, not after it.
        raise NpusimError(f"--trace {trace}: folder {trace.parent} does not exist")
    res = simulate(graph, cfg, seed=seed, numerics=numerics)
    if trace is not None:
        save_trace(trace, cfg, graph, res.records.ops, res.cycles, seed, res.records.writebacks)
    doc = run_json(res)
    if json_out:
        sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    else:
        render_run(doc, Console())
        if trace is not None:
            Console().print(f"trace written to {trace}")
    return doc
