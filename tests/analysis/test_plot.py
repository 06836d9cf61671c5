"""`npusim plot`: valid PNGs of sane size, with labelled axes, a legend and pipe names."""

from __future__ import annotations

import pytest

from npusim.analysis.gantt import gantt_figure
from npusim.analysis.grid import parse_grid
from npusim.analysis.runners import SerialRunner
from npusim.analysis.sweep import SweepSpec, run_sweep
from npusim.analysis.sweep_plot import speedup_figure, speedup_table
from npusim.analysis.table import read_rows
from npusim.analysis.tracefile import open_trace
from npusim.analysis.window import make_window
from npusim.errors import NpusimError
from npusim.kernels.registry import KERNELS


def test_gantt_png_of_a_trace(traces, cli, tmp_path, png_size):
    out = tmp_path / "gantt.png"
    res = cli("plot", traces["chip"].path, "-o", out, "--core", "0", "--core", "1", "--from", "0", "--to", "3000")
    assert res.exit_code == 0, res.output
    w, h = png_size(out)
    assert 800 <= w <= 3000 and 300 <= h <= 2000
    assert 10_000 < out.stat().st_size < 2_000_000


def test_gantt_figure_has_labels_legend_and_pipe_names(traces):
    run = open_trace(traces["chip"].path)
    fig = gantt_figure(run, make_window(run, [0]))
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("cycle") and ax.get_ylabel() == "pipe"
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["core 0 AIC MTE2", "core 0 AIC MTE1", "core 0 AIC CUBE", "core 0 AIC FIXP"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "busy: CUBE" in legend and "busy: MTE2" in legend
    assert any(t.startswith("idle: ") for t in legend), legend  # idle time shaded by cause


@pytest.fixture(scope="module")
def sweep_csv(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "l2.csv"
    spec = SweepSpec("gemm", parse_grid(["m=1,4,16", "k=256,512", "n=256", "l2.enabled=false,true"],
                                        KERNELS["gemm"]), methods=("native",))
    run_sweep(spec, out, SerialRunner())
    return out


def test_speedup_table_pairs_points(sweep_csv):
    rows = read_rows(sweep_csv)
    s = speedup_table(rows, by="l2.enabled", a="false", b="true")
    assert s.x_axis == "m" and s.x_values == ["1", "4", "16"] and s.series_axes == ["k"]
    assert set(s.series) == {"k=256", "k=512"}
    by_point = {(r["grid.m"], r["grid.k"], r["grid.l2.enabled"]): int(r["cycles"]) for r in rows}
    assert s.series["k=512"][2] == by_point[("16", "512", "false")] / by_point[("16", "512", "true")]
    with pytest.raises(NpusimError, match="no finished rows with method=dequant"):
        speedup_table(rows)  # the default MSD-over-dequant plot needs both methods in the sweep


def test_sweep_png(sweep_csv, cli, tmp_path, png_size):
    out = tmp_path / "speedup.png"
    res = cli("plot", sweep_csv, "-o", out, "--by", "l2.enabled", "--a", "false", "--b", "true")
    assert res.exit_code == 0, res.output
    w, h = png_size(out)
    assert 500 <= w <= 2000 and 300 <= h <= 1500
    fig = speedup_figure(speedup_table(read_rows(sweep_csv), "l2.enabled", "false", "true"))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "m" and "speedup" in ax.get_ylabel()
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"k=256", "k=512"}
    res = cli("plot", sweep_csv, "-o", tmp_path / "default.png")
    assert res.exit_code == 2 and "method=dequant" in res.stderr and not (tmp_path / "default.png").exists()


def test_default_plot_msd_over_dequant(cli, tmp_path, png_size):
    """The flagship plot, once the dequant and MSD builders are registered (skipped before)."""
    from npusim.config import load_config
    if not {"dequant", "msd"} <= set(KERNELS["gemm"].methods(load_config("910b"))):
        pytest.skip("the gemm preset lists no dequant/msd methods yet")
    out, png = tmp_path / "msd.csv", tmp_path / "msd.png"
    res = cli("sweep", "--grid", "m=1,4", "--grid", "hbm.bandwidth=1.6 TB/s,3.2 TB/s", "--grid", "k=256",
              "--grid", "n=256", "--grid", "weights=int8", "--method", "dequant,msd", "--jobs", "1", "-o", out)
    assert res.exit_code == 0, res.output
    rows = read_rows(out)
    if any(r["error"] for r in rows):
        pytest.skip(f"dequant/msd do not run yet: {next(r['error'] for r in rows if r['error'])}")
    assert [r["method"] for r in rows] == ["dequant", "msd"] * 4
    res = cli("plot", out, "-o", png)
    assert res.exit_code == 0, res.output
    assert png_size(png)[0] >= 500
    s = speedup_table(rows)
    assert s.x_axis in ("m", "hbm.bandwidth") and len(s.series) == 2
