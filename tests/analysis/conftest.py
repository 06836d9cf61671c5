"""Shared fixtures: small traces written from live runs (with the run JSON of the same run), and a
local typer app with the commands under test registered as the lead will register them."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from npusim.cli.sweep_cmd import sweep_cmd
from npusim.cli.trace_cmds import diff_cmd, inspect_cmd, plot_cmd
from npusim.config import load_config
from npusim.kernels import registry
from npusim.report.run_report import run_json
from npusim.sim.run import simulate
from npusim.trace.chrome import save_trace


@dataclass(frozen=True)
class LiveRun:
    path: Path
    doc: dict[str, Any]  # the run JSON of the run that wrote the trace


def write_trace(path: Path, overrides: list[str] = (), **options: Any) -> LiveRun:
    cfg = load_config("910b", list(overrides))
    graph = registry.build("gemm", cfg, {"method": "native", **options})
    res = simulate(graph, cfg, seed=3, numerics=False)
    save_trace(path, cfg, graph, res.records.ops, res.cycles, 3, res.records.writebacks)
    return LiveRun(path, run_json(res))


@pytest.fixture(scope="session")
def traces(tmp_path_factory) -> dict[str, LiveRun]:
    d = tmp_path_factory.mktemp("traces")
    shape = {"m": 16, "k": 512, "n": 512}
    return {
        "chip": write_trace(d / "chip.json", **shape),  # all 24 cores: the cores share HBM bandwidth
        "one_core": write_trace(d / "one_core.json", cores=1, **shape),  # a lone core: port rate, no HBM share
        "no_l2": write_trace(d / "no_l2.json", ["l2.enabled=false"], **shape),
    }


@pytest.fixture(scope="session")
def app() -> typer.Typer:
    a = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    a.command("inspect")(inspect_cmd)
    a.command("diff")(diff_cmd)
    a.command("plot")(plot_cmd)
    a.command("sweep")(sweep_cmd)
    return a


@pytest.fixture
def cli(app):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})
    return invoke


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def png_size():
    return _png_size
