"""The `npusim` command line. Every user error ends in one message on stderr and exit status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from npusim.cli import common
from npusim.cli.accuracy import accuracy
from npusim.cli.attention_cmds import compare_attention, run_attention
from npusim.cli.model_cmds import crossover_app, verify_cmd
from npusim.cli.sweep_cmd import sweep_cmd
from npusim.cli.trace_cmds import diff_cmd, inspect_cmd, plot_cmd
from npusim.cli.workload_cmds import run_workload
from npusim.config import load_config, preset_paths
from npusim.errors import NpusimError
from npusim.sim.gc_pause import gc_paused
from npusim.graph.io import load_graph, save_graph
from npusim.kernels.gemm.quant import build_gemm

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cycle-level simulator of an Ascend-style NPU (Cube, Vector, MTE pipes, HBM/L2).")
run_app = typer.Typer(no_args_is_help=True, help="Simulate one kernel and report cycles, pipes, traffic, numerics.")
app.add_typer(run_app, name="run")
compare_app = typer.Typer(help="Every method the preset supports, side by side, on one GEMM or a model's layer.")
app.add_typer(compare_app, name="compare")

METHOD = typer.Option("native", "--method", help="native (bf16 weights) | dequant | msd | direct")
WEIGHTS = typer.Option("bf16", "--weights", help="bf16 | int8 (per channel) | int8-g128 (per group of 128) | mxfp4")
PASSES = typer.Option(2, "--passes", help="MSD passes (1-4)")


@app.command()
@common.user_errors
def presets() -> None:
    """List the shipped hardware presets."""
    t = Table(title="hardware presets (configs/)")
    for col in ("name", "cores", "clock", "HBM", "bf16 peak", "description"):
        t.add_column(col)
    for name in preset_paths():
        c = load_config(name)
        t.add_row(name, f"{c.chip.cores} AIC + {c.chip.cores * c.chip.aiv_per_core} AIV",
                  f"{c.chip.clock_hz / 1e9:g} GHz", f"{c.hbm.bandwidth_bytes_per_s / 1e12:g} TB/s",
                  f"{c.peak_bf16_flops / 1e12:.1f} TFLOPS", c.meta.description)
    Console().print(t)


@app.command()
@common.user_errors
def validate(file: str = typer.Argument(..., help="TOML hardware config (or a preset name) to check"),
             overrides: Optional[list[str]] = common.SET) -> None:
    """Check a hardware config file against the schema; exit 2 with the offending fields if it fails."""
    cfg = load_config(file, overrides or [])
    Console().print(f"[green]ok[/]: {file} is a valid hardware config ({cfg.meta.name}: {cfg.meta.description})")


@run_app.command("gemm")
@common.user_errors
def run_gemm(
    m: int = typer.Option(..., "--m", help="rows of X and Y (tokens)"),
    k: int = typer.Option(..., "--k", help="inner dimension"),
    n: int = typer.Option(..., "--n", help="columns of W and Y (output channels)"),
    cores: Optional[int] = typer.Option(None, "--cores", help="AI-core groups to use (default: all)"),
    hw: str = common.HW, overrides: Optional[list[str]] = common.SET, seed: int = common.SEED,
    trace: Optional[Path] = common.TRACE, json_out: bool = common.JSON,
    no_numerics: bool = common.NO_NUMERICS,
    save_graph_to: Optional[Path] = typer.Option(None, "--save-graph", help="also write the schedule as a JSON graph"),
    method: str = METHOD, weights: str = WEIGHTS, passes: int = PASSES,
) -> None:
    """GEMM Y = X @ W (bf16 X and Y), tiled from the buffers over all cores: native bf16, the dequant
    baseline or MSD on quantized weights."""
    cfg = common.config(hw, overrides)
    if weights == "bf16" and method != "native":
        weights = "int8"  # a quantized method with the default weights means the usual W8A16 case
    graph = build_gemm(cfg, m, k, n, cores, method=method, weights=weights, passes=passes)
    if save_graph_to is not None:
        save_graph(graph, save_graph_to)
    common.run_and_report(graph, cfg, seed=seed, trace=trace, json_out=json_out, numerics=not no_numerics)


@run_app.command("graph")
@common.user_errors
def run_graph(
    file: Path = typer.Argument(..., help="kernel graph JSON (from --save-graph, or written by hand)"),
    hw: str = common.HW, overrides: Optional[list[str]] = common.SET, seed: int = common.SEED,
    trace: Optional[Path] = common.TRACE, json_out: bool = common.JSON,
    no_numerics: bool = common.NO_NUMERICS,
) -> None:
    """Simulate a saved or hand-written kernel graph."""
    cfg = common.config(hw, overrides)
    graph = load_graph(file)
    common.run_and_report(graph, cfg, seed=seed, trace=trace, json_out=json_out, numerics=not no_numerics)


run_app.command("workload")(common.user_errors(run_workload))


@compare_app.callback(invoke_without_command=True)
@common.user_errors
def compare_workload(
    ctx: typer.Context,
    workload: Optional[str] = typer.Option(None, "--workload", help="a workloads/ name (e.g. llama-3.1-70b) or TOML path"),
    phase: Optional[str] = typer.Option(None, "--phase", help="phase of the workload (e.g. decode_b16; default: the first)"),
    weights: str = typer.Option("int8", "--weights", help="quantized weight format for dequant and msd"),
    passes: int = PASSES, hw: str = common.HW, overrides: Optional[list[str]] = common.SET,
    json_out: bool = common.JSON, numerics: bool = typer.Option(False, "--numerics", help="also check every output (slower)"),
    context: Optional[int] = typer.Option(None, "--context", help="attention context length in tokens (default: the workload's first)"),
    layers: Optional[str] = typer.Option(None, "--layers", help="simulate every layer ('all') or the first N, "
                                         "instead of each distinct shape once, multiplied (the default)"),
) -> None:
    """With --workload: all GEMMs (and decode attention) of a model layer, every method, totalled over the
    model: each distinct shape simulated once and multiplied, or with --layers every layer simulated."""
    if ctx.invoked_subcommand is not None:
        return
    if workload is None:
        raise NpusimError("compare: give --workload FILE, or a kernel: `npusim compare gemm --m M --k K --n N`")
    from npusim.report.compare import render_workload, run_workload_comparison
    from npusim.workloads.load import load_workload
    cfg = common.config(hw, overrides)
    err = Console(stderr=True)
    progress = None if json_out else (lambda s: err.print(f"  {s}", style="dim"))
    if layers is not None:
        from npusim.cli.workload_cmds import render_compare_step
        from npusim.workloads.step import compare_step
        res = compare_step(cfg, load_workload(workload), phase, weights=weights, passes=passes, layers=layers,
                           context=context, numerics=numerics, progress=progress)
        if json_out:
            sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
        else:
            render_compare_step(res, Console())
        return
    res = run_workload_comparison(cfg, load_workload(workload), phase, weights=weights, passes=passes,
                                  numerics=numerics, context=context, progress=None if json_out else (lambda s: err.print(f"  {s}", style="dim")))
    if json_out:
        sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
    else:
        render_workload(res, Console())


@compare_app.command("gemm")
@common.user_errors
def compare_gemm(
    m: int = typer.Option(..., "--m", help="rows of X (tokens)"),
    k: int = typer.Option(..., "--k", help="inner dimension"),
    n: int = typer.Option(..., "--n", help="output channels"),
    cores: Optional[int] = typer.Option(None, "--cores", help="AI-core groups to use (default: all)"),
    weights: str = typer.Option("int8", "--weights", help="quantized weight format for dequant and msd"),
    passes: int = PASSES, hw: str = common.HW, overrides: Optional[list[str]] = common.SET, seed: int = common.SEED,
    json_out: bool = common.JSON, no_numerics: bool = common.NO_NUMERICS,
) -> None:
    """One GEMM shape, every method: cycles, speedup over dequant, Cube stalls, HBM bytes, error."""
    from npusim.report.compare import render_comparison, run_gemm_comparison
    cfg = common.config(hw, overrides)
    docs = run_gemm_comparison(cfg, m, k, n, weights=weights, passes=passes, cores=cores, seed=seed,
                               numerics=not no_numerics)
    if json_out:
        sys.stdout.write(json.dumps({"rows": docs}, sort_keys=True) + "\n")
    else:
        render_comparison(docs, Console(), f"GEMM {m}x{k}x{n} on {cfg.meta.name}")


run_app.command("attention")(run_attention)
compare_app.command("attention")(compare_attention)
app.command("accuracy", help="Effective bits, error bounds and GEMM accuracy of the number formats "
                             "(DESIGN.md section 5, rows 1-5 and 9).")(common.user_errors(accuracy))
app.command("verify")(verify_cmd)
app.add_typer(crossover_app, name="crossover")
app.command("inspect")(inspect_cmd)
app.command("diff")(diff_cmd)
app.command("plot")(plot_cmd)
app.command("sweep")(sweep_cmd)


def main() -> None:
    try:
        # A command builds and simulates graphs of up to millions of small acyclic objects; the cyclic
        # collector would re-traverse them all, repeatedly, for nothing (see npusim/sim/gc_pause.py).
        with gc_paused():
            app(prog_name="npusim")
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
