"""`npusim verify` and `npusim crossover gemm`: the simulation against the closed-form models.

The lead registers them in npusim/cli/main.py:
    from npusim.cli.model_cmds import crossover_app, verify_cmd
    app.command("verify")(verify_cmd)
    app.add_typer(crossover_app, name="crossover")
"""

from __future__ import annotations

import json
import sys
import time
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from npusim.cli import common
from npusim.model.verify import PRESETS, STEADY_TILES, TOLERANCE, crossover, verify

crossover_app = typer.Typer(no_args_is_help=True,
                            help="The largest M at which MSD is still faster than dequant: simulation and model.")

ROW_KEYS = ("kernel", "method", "hw", "shape", "sim_cycles", "model_cycles", "ratio", "model_bound", "sim_leader",
            "sim_hbm_bytes", "model_hbm_bytes")


def _console() -> Console:
    """Wide tables stay on one line when the output is not a terminal (a file, a pipe)."""
    c = Console()
    return c if c.is_terminal else Console(width=200)


@common.user_errors
def verify_cmd(
    hw: Optional[str] = typer.Option(None, "--hw", help="one preset or TOML config (default: every preset)"),
    overrides: Optional[list[str]] = common.SET,
    json_out: bool = common.JSON,
    quick: bool = typer.Option(False, "--quick", help="a small subset of the grid (M 1, 16, 256; two shapes)"),
) -> None:
    """Every GEMM method over M x (K, N) of the shipped workloads, and attention decode (GQA and MLA at 4k
    and 32k context; not in --quick): simulated vs modelled cycles, the binding resource and GM traffic by
    role (bytes exact; HBM vs L2 within the model's range)."""
    hws = [hw] if hw else list(PRESETS)
    err = Console(stderr=True)
    t0 = time.time()

    def progress(row: dict) -> None:
        if not json_out:
            if "error" in row:
                err.print(f"  {row['hw']} {row['method']} {row['shape']}: [red]error[/] {row['error'].splitlines()[0]}",
                          highlight=False)
            else:
                err.print(f"  {row['hw']} {row['method']:7s} {row['shape']:>16s}  ratio {row['ratio']:.3f}", style="dim",
                          highlight=False)

    res = verify(hws, overrides or [], quick=quick, progress=progress)
    res["wall_s"] = round(time.time() - t0, 1)
    if json_out:
        sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
        return
    c = _console()
    t = Table(title=f"simulation vs closed-form model ({len(res['rows'])} points)", title_justify="left")
    for col in ("#", "hw", "method", "shape", "sim cycles", "model cycles", "ratio", "model bound", "sim leader",
                "traffic", "HBM MiB sim / model"):
        t.add_column(col, justify="right" if "cycles" in col or col in ("ratio", "#") else "left")
    notes = []
    for i, r in enumerate(res["rows"], 1):
        if "error" in r:
            t.add_row(str(i), r["hw"], r["method"], r["shape"], "-", "-", "-", "-", "-", "-", "-")
            notes.append((i, "[red]error[/]: " + r["error"].splitlines()[0]))
            continue
        ok = "[green]exact[/]" if r["traffic_ok"] else "[red]MISMATCH[/]"
        ratio = f"{r['ratio']:.3f}" if r["within_tolerance"] else f"[yellow]{r['ratio']:.3f}[/]"
        t.add_row(str(i), r["hw"], r["method"], r["shape"], f"{r['sim_cycles']:,}", f"{r['model_cycles']:,}", ratio,
                  r["model_bound"], r["sim_leader"], ok,
                  f"{r['sim_hbm_bytes'] / 2**20:.1f} / {r['model_hbm_bytes'] / 2**20:.1f}")
        if r["note"]:
            notes.append((i, r["note"]))
        for bad in r["traffic_mismatches"]:
            notes.append((i, f"[red]traffic[/]: {bad}"))
    c.print(t)
    for i, note in notes:
        c.print(f"  #{i}: {note}", highlight=False)
    s = res["summary"]
    c.print(f"traffic exact (bytes per role; HBM within range): {s['traffic_exact']}/{s['points']}; "
            f"cycles within {TOLERANCE:.0%}: {s['within_10pct']}/{s['points']} "
            f"({s['steady_within_10pct']}/{s['steady_points']} of the points with ≥ {STEADY_TILES} tiles per core); "
            f"binding resource agrees: {s['bound_agrees']}/{s['points']}; {res['wall_s']} s")
    errors = sum(1 for r in res["rows"] if "error" in r)
    if errors:
        c.print(f"[red]{errors} point(s) could not be built or run[/] (listed above)")


@crossover_app.command("gemm")
@common.user_errors
def crossover_gemm(
    k: int = typer.Option(..., "--k", help="inner dimension"),
    n: int = typer.Option(..., "--n", help="output channels"),
    passes: int = typer.Option(2, "--passes", help="MSD passes (1-4)"),
    m_max: int = typer.Option(4096, "--m-max", help="largest M searched"),
    hw: str = common.HW, overrides: Optional[list[str]] = common.SET, json_out: bool = common.JSON,
) -> None:
    """Largest M at which MSD-p (int8) is still faster than dequant (int8): bisection over M in the
    simulator (timing only) and in the closed-form model."""
    cfg = common.config(hw, overrides)
    t0 = time.time()
    res = crossover(cfg, k, n, passes=passes, m_max=m_max)
    res["wall_s"] = round(time.time() - t0, 1)
    res["overrides"] = list(overrides or [])
    if json_out:
        sys.stdout.write(json.dumps(res, sort_keys=True) + "\n")
        return
    c = _console()
    t = Table(title=f"MSD-{passes} vs dequant, K={k} N={n} on {cfg.meta.name}"
              + (f" ({', '.join(overrides)})" if overrides else ""), title_justify="left")
    for col in ("M", "sim dequant", "sim MSD", "sim speedup", "model dequant", "model MSD", "model speedup"):
        t.add_column(col, justify="right")
    for p in res["points"]:
        sd, sm = p["sim_dequant"], p["sim_msd"]
        t.add_row(str(p["m"]), f"{sd:,}" if sd else "-", f"{sm:,}" if sm else "-",
                  f"{sd / sm:.2f}×" if sd and sm else "-", f"{p['model_dequant']:,}", f"{p['model_msd']:,}",
                  f"{p['model_dequant'] / p['model_msd']:.2f}×")
    c.print(t)
    c.print(f"largest M with MSD faster: simulation {res['m_star_sim']}, model {res['m_star_model']} "
            f"({res['wall_s']} s)")
    if res["model_msd_wins_again_at"]:
        c.print(f"[yellow]note[/]: the model has MSD faster again at M = "
                f"{', '.join(map(str, res['model_msd_wins_again_at']))} (more than one crossover)")
