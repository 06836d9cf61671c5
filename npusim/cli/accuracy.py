"""`npusim accuracy`: the numerics study of DESIGN.md section 5 (rows 1-5, GEMM part of row 9).

Only rendering lives here; the numbers come from npusim.numerics.accuracy.run_accuracy. Register with
`app.command("accuracy")(accuracy)`.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from npusim.numerics.accuracy import paper_comparison, run_accuracy
from npusim.numerics.samples import DISTRIBUTIONS


def accuracy(
    json_out: bool = typer.Option(False, "--json", help="Print exactly one JSON object on stdout instead of tables."),
    seed: int = typer.Option(0, "--seed", help="Seed of the numpy Generator that draws all test data (>= 0)."),
) -> None:
    """Effective bits, error bounds and GEMM errors of the MSD and dequant methods, next to the paper's figures."""
    result = run_accuracy(seed)
    if json_out:
        typer.echo(json.dumps(result))
        return
    console = Console()
    for table in (_paper_table(result), _bits_table(result), _bounds_table(result), _gemm_table(result)):
        console.print(table)
    console.print("Metric definitions and the reading of alpha: docs/numerics.md")


METRIC_LABELS = {
    "log2_range_over_max_err": "log2(M/eps_max)",
    "neg_log2_rel_l2": "-log2 rel L2",
    "sqnr_enob": "SQNR ENOB",
}


def _paper_table(result: dict) -> Table:
    t = Table(title="DESIGN.md section 5: the paper's figures and ours")
    for col in ("#", "claim", "paper", "ours", "measured as"):
        t.add_column(col, justify="right" if col == "ours" else "left")
    for claim, ours in paper_comparison(result):
        dist = claim.match.get("distribution")
        if claim.section == "effective_bits":
            how, text = f"{METRIC_LABELS[claim.match['metric']]}, {dist}", f"{ours:.2f}"
        elif claim.section == "bounds":
            how, text = "max error / bound", f"{ours:.4f}"
        else:
            how, text = f"rel L2 vs FP64, {dist}", _fmt(ours)
        t.add_row(str(claim.row), claim.claim, claim.paper, "-" if ours is None else text, how)
    return t


def _bits_table(result: dict) -> Table:
    t = Table(title="Effective bits (64 x 4096 fp32 rows per distribution)")
    for col in ("format", "passes", "metric", *DISTRIBUTIONS):
        t.add_column(col, justify="right" if col in DISTRIBUTIONS else "left")
    cells: dict[tuple, dict[str, float]] = {}
    for r in result["effective_bits"]:
        cells.setdefault((r["format"], r["passes"], r["metric"]), {})[r["distribution"]] = r["bits"]
    for (fmt, p, metric), by_dist in cells.items():
        t.add_row(fmt, str(p), METRIC_LABELS.get(metric, metric), *(f"{by_dist[d]:.2f}" if d in by_dist else "-" for d in DISTRIBUTIONS))
    return t


def _bounds_table(result: dict) -> Table:
    t = Table(title="Error bounds: largest observed error / stated bound (all distributions)")
    for col in ("format", "passes", "bound", "max_ratio"):
        t.add_column(col, justify="right" if col == "max_ratio" else "left")
    for r in result["bounds"]:
        t.add_row(r["format"], str(r["passes"]), r["bound"], f"{r['max_ratio']:.6f}")
    return t


def _gemm_table(result: dict) -> Table:
    t = Table(title="GEMM M=16, K=N=4096, fp32 output: relative L2 error vs FP64 of the same quantized operands")
    for col in ("method", "passes", *DISTRIBUTIONS):
        t.add_column(col, justify="right" if col in DISTRIBUTIONS else "left")
    cells: dict[tuple, dict[str, float]] = {}
    for r in result["gemm"]:
        cells.setdefault((r["method"], r["passes"]), {})[r["distribution"]] = r["rel_l2_vs_fp64"]
    for (method, p), by_dist in cells.items():
        t.add_row(method, "-" if p is None else str(p), *(_fmt(by_dist.get(d)) for d in DISTRIBUTIONS))
    return t


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.4g}"
