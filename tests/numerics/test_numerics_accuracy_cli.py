"""`npusim accuracy --json` through typer on a local app (the lead registers the same function)."""

import json

import pytest
import typer
from typer.testing import CliRunner

from npusim.cli.accuracy import accuracy
from npusim.errors import NumericsError
from npusim.numerics.accuracy import run_accuracy


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("accuracy")(accuracy)

    @app.command("noop")
    def noop() -> None:  # a second command so that "accuracy" is parsed as a subcommand name
        pass

    return app


@pytest.fixture(scope="module")
def json_stdout() -> str:
    """The one full study of this module (a few seconds), through the CLI."""
    result = CliRunner().invoke(_app(), ["accuracy", "--json", "--seed", "0"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_accuracy_json_is_one_object_with_the_figures(json_stdout):
    data = json.loads(json_stdout)  # exactly one JSON document, nothing else on stdout
    assert set(data) == {"effective_bits", "bounds", "gemm"}
    for row in data["effective_bits"]:
        assert set(row) == {"format", "passes", "metric", "distribution", "bits"}
    for row in data["bounds"]:
        assert set(row) == {"format", "passes", "bound", "max_ratio"}
    for row in data["gemm"]:
        assert set(row) == {"method", "passes", "distribution", "rel_l2_vs_fp64"}

    def bits(fmt, p, metric, dist):
        (r,) = [r for r in data["effective_bits"]
                if (r["format"], r["passes"], r["metric"], r["distribution"]) == (fmt, p, metric, dist)]
        return r["bits"]

    def ratio(fmt, p):
        (r,) = [r for r in data["bounds"] if (r["format"], r["passes"]) == (fmt, p)]
        return r["max_ratio"]

    def gemm(method, p, dist="normal"):
        (r,) = [r for r in data["gemm"] if (r["method"], r["passes"], r["distribution"]) == (method, p, dist)]
        return r["rel_l2_vs_fp64"]

    assert abs(bits("int8", 2, "log2_range_over_max_err", "normal") - 15.98) <= 0.02
    assert abs(bits("mxfp4", 2, "neg_log2_rel_l2", "uniform") - 6.6) <= 0.1
    assert abs(bits("mxfp8", 1, "neg_log2_rel_l2", "normal") - 5.24) <= 0.05
    for fmt, p in (("int8", 1), ("int8", 2), ("int8", 3), ("mxfp4", 2), ("mxfp8", 1), ("int8-fixed127", 2)):
        assert 0.99 < ratio(fmt, p) <= 1.0
    assert ratio("mxfp4-ocp", 2) > 1.0
    assert gemm("msd-int8", 2) * 10 <= gemm("dequant-int8", None) < gemm("msd-int8", 1)


def test_tables_render(json_stdout, monkeypatch):
    # Rendering only: reuse the study's result rather than computing it again.
    seeds = []
    monkeypatch.setattr("npusim.cli.accuracy.run_accuracy", lambda seed: seeds.append(seed) or json.loads(json_stdout))
    result = CliRunner().invoke(_app(), ["accuracy", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert seeds == [1]
    assert "15.98" in result.stdout and "M/64516" in result.stdout and "alpha/64" in result.stdout


def test_bad_seed_is_a_numerics_error():
    with pytest.raises(NumericsError, match="seed"):
        run_accuracy(-1)
    result = CliRunner().invoke(_app(), ["accuracy", "--json", "--seed", "-3"])
    assert isinstance(result.exception, NumericsError)
