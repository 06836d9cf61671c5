"""The `npusim` command line. Every user error ends in one message on stderr and exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from npusim.cli import common
from npusim.config import load_config, preset_paths
from npusim.graph.io import load_graph, save_graph
from npusim.kernels.gemm.native import build_gemm_native

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cycle-level simulator of an Ascend-style NPU (Cube, Vector, MTE pipes, HBM/L2).")
run_app = typer.Typer(no_args_is_help=True, help="Simulate one kernel and report cycles, pipes, traffic, numerics.")
app.add_typer(run_app, name="run")


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
) -> None:
    """bf16 GEMM Y = X @ W (fp32 accumulation, bf16 out), tiled from the buffers, over all cores."""
    cfg = common.config(hw, overrides)
    graph = build_gemm_native(cfg, m, k, n, cores)
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


def _register_optional_commands() -> None:
    try:
        from npusim.cli.accuracy import accuracy
    except ImportError:
        return
    app.command("accuracy", help="Effective bits, error bounds and GEMM accuracy of the number formats "
                                 "(DESIGN.md section 5, rows 1-5 and 9).")(common.user_errors(accuracy))


_register_optional_commands()


def main() -> None:
    try:
        app(prog_name="npusim")
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
