"""Bad input to inspect, diff, plot and sweep: exit status 2 and one `error:` line, no output file."""

from __future__ import annotations

import json

import pytest


def one_error(res) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


@pytest.fixture
def not_a_trace(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"hello": "world"}))
    return p


def test_missing_and_non_trace_files(cli, tmp_path, not_a_trace, traces):
    assert "no such file" in one_error(cli("inspect", tmp_path / "nope.json"))
    assert "not a valid npusim trace" in one_error(cli("inspect", not_a_trace))
    assert "not a valid npusim trace" in one_error(cli("diff", traces["chip"].path, not_a_trace))
    assert "no such file" in one_error(cli("plot", tmp_path / "nope.json", "-o", tmp_path / "x.png"))
    assert "no such file" in one_error(cli("plot", tmp_path / "nope.csv", "-o", tmp_path / "x.png"))
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    assert "not a sweep CSV" in one_error(cli("plot", tmp_path / "junk.csv", "-o", tmp_path / "x.png"))
    assert "expected a trace" in one_error(cli("plot", tmp_path / "x.txt", "-o", tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_bad_windows_and_cores(cli, traces, tmp_path):
    path = traces["chip"].path
    assert "must be below --to" in one_error(cli("inspect", path, "--from", "2000", "--to", "1000"))
    assert "must be below --to" in one_error(cli("plot", path, "-o", tmp_path / "g.png", "--from", "5", "--to", "5"))
    assert "the run ends at cycle" in one_error(cli("inspect", path, "--from", "10000000"))
    assert "--core 99" in one_error(cli("inspect", path, "--core", "99"))
    assert "apply to traces" in one_error(cli("plot", tmp_path / "s.csv", "-o", tmp_path / "g.png", "--core", "0"))
    assert ".png" in one_error(cli("plot", path, "-o", tmp_path / "g.jpg"))


def test_bad_sweeps(cli, tmp_path):
    out = tmp_path / "s.csv"
    base = ["--grid", "k=256", "--grid", "n=256", "-o", out]
    assert "unknown config field hbm.bandwith" in one_error(cli("sweep", "--grid", "m=1", "--grid", "hbm.bandwith=1 TB/s", *base))
    assert "not a gemm option" in one_error(cli("sweep", "--grid", "mm=1", *base))
    assert "needs option(s) m" in one_error(cli("sweep", *base))
    assert "--method" in one_error(cli("sweep", "--grid", "m=1", "--grid", "method=native", *base))
    # A bad base config fails the whole sweep at once (the config loader lists the fields on more lines).
    res = cli("sweep", "--grid", "m=1", "--set", "hbm.bandwidth=-1 TB/s", *base)
    assert res.exit_code == 2 and res.stderr.startswith("error: invalid hardware config")
    assert "expected a Dask scheduler address" in one_error(cli("sweep", "--grid", "m=1", "--scheduler", "localhost", *base))
    assert "--jobs" in one_error(cli("sweep", "--grid", "m=1", "--scheduler", "tcp://127.0.0.1:1", "--jobs", "2", *base))
    assert ".csv" in one_error(cli("sweep", "--grid", "m=1", "--grid", "k=256", "--grid", "n=256", "-o", tmp_path / "s.txt"))
    assert not out.exists()


def test_unreachable_scheduler(cli, tmp_path):
    pytest.importorskip("distributed")
    res = cli("sweep", "--grid", "m=1", "--grid", "k=256", "--grid", "n=256", "--method", "native",
              "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "1", "-o", tmp_path / "s.csv")
    assert "cannot connect" in one_error(res)
    assert not (tmp_path / "s.csv").exists()
    assert "does not exist" in one_error(cli("sweep", "--grid", "m=1", "--grid", "k=256", "--grid", "n=256",
                                             "-o", tmp_path / "nowhere" / "s.csv"))
