"""`npusim run workload`: a model's forward step, kernel after kernel; and the per-layer rendering of
`npusim compare --workload --layers`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from npusim.cli import common
from npusim.errors import NpusimError
from npusim.report.compare import totals_table
from npusim.units import format_bytes


def run_workload(
    workload: str = typer.Option(..., "--workload", help="a workloads/ name (e.g. llama-3.1-70b) or TOML path"),
    phase: Optional[str] = typer.Option(None, "--phase", help="phase of the workload (e.g. decode_b16; default: the first)"),
    method: str = typer.Option("msd", "--method", help="native (bf16 weights and KV) | dequant | msd"),
    weights: str = typer.Option("int8", "--weights", help="quantized weight format for dequant and msd"),
    passes: int = typer.Option(2, "--passes", help="MSD passes (1-4)"),
    layers: str = typer.Option("all", "--layers", help="'all' = every layer of the model, N = the first N layers"),
    context: Optional[int] = typer.Option(None, "--context", help="attention context length in tokens (default: the workload's first)"),
    hw: str = common.HW, overrides: Optional[list[str]] = common.SET, seed: int = common.SEED,
    trace: Optional[Path] = common.TRACE, json_out: bool = common.JSON,
    numerics: bool = typer.Option(False, "--numerics", help="also check every kernel's output bit for bit (slower)"),
) -> None:
    """A model's forward step under one method: every GEMM and attention kernel of every layer, simulated
    one after the other (kernel k starts when kernel k-1 ends). The trace is streamed kernel by kernel, so
    memory holds one kernel at a time."""
    from npusim.workloads.load import load_workload
    from npusim.workloads.step import run_step
    if method not in ("native", "dequant", "msd"):
        raise NpusimError(f"--method {method!r}: a model step runs native, dequant or msd")
    cfg = common.config(hw, overrides)
    if trace is not None and not trace.parent.is_dir():
        raise NpusimError(f"--trace {trace}: folder {trace.parent} does not exist")
    err = Console(stderr=True)
    doc = run_step(cfg, load_workload(workload), phase, method, weights=weights, passes=passes, layers=layers,
                   context=context, numerics=numerics, seed=seed, trace=str(trace) if trace else None,
                   progress=None if json_out else (lambda s: err.print(f"  {s}", style="dim")))
    if json_out:
        sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
        return
    render_step(doc, Console())
    if trace is not None:
        Console().print(f"trace: {trace}")


def render_step(doc: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{doc['workload']}[/], phase {doc['phase']} ({doc['tokens']} tokens), {doc['method']} "
                  f"{doc['weights']} on {doc['hw']}: {doc['layers_simulated']} of {doc['model_layers']} layers, "
                  f"{doc['kernels_simulated']} kernels simulated one by one (nothing multiplied)")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("kernel", "kind", "launches", "cycles", "ops"):
        t.add_column(col, justify="left" if col in ("kernel", "kind") else "right", no_wrap=True)
    for k in doc["kernels"]:
        t.add_row(k["name"], k["kind"], f"{k['count']:,}", f"{k['cycles']:,}", f"{k['ops']:,}")
    console.print(t)
    exact = "" if doc["exact"] is None else (", outputs exact" if doc["exact"] else ", [red]outputs NOT exact[/]")
    console.print(f"step: {doc['cycles']:,} cycles = {doc['time_us'] / 1000:.3f} ms, HBM {format_bytes(doc['hbm_bytes'])}, "
                  f"{doc['ops']:,} ops simulated in {doc['wall_s']:.1f} s{exact}")


def render_compare_step(res: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{res['workload']}[/], phase {res['phase']} ({res['tokens']} tokens), on {res['hw']}: "
                  f"{res['layers_simulated']} of {res['model_layers']} layers, every kernel of every layer "
                  f"simulated ({res['kernels_simulated']} runs, nothing multiplied)")
    console.print(totals_table(res["totals"], f"{res['layers_simulated']} layers (one forward step)"))
