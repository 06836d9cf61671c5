"""`npusim sweep`: grids over options and config fields, failures recorded, resume, pool and Dask alike."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from npusim.analysis.grid import parse_grid
from npusim.analysis.runners import DaskRunner, PoolRunner, SerialRunner
from npusim.analysis.sweep import SweepSpec, run_sweep
from npusim.kernels.registry import KERNELS

SMALL = ["k=256", "n=256"]


def rows_of(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def spec(*grid: str, methods=("native",)) -> SweepSpec:
    return SweepSpec("gemm", parse_grid([*grid, *SMALL], KERNELS["gemm"]), methods=methods)


def test_hundred_points_on_a_pool_with_a_failing_value(tmp_path, cli):
    out = tmp_path / "sweep.csv"
    bandwidths = ["0.4 TB/s", "0.8 TB/s", "1.2 TB/s", "1.6 TB/s", "-1 TB/s", "2.4 TB/s", "3.2 TB/s", "4.8 TB/s",
                  "6.4 TB/s", "9.6 TB/s"]
    res = cli("sweep", "--grid", "m=1,2,3,4,6,8,12,16,24,32", "--grid", "hbm.bandwidth=" + ",".join(bandwidths),
              *(x for g in SMALL for x in ("--grid", g)), "--method", "native", "--jobs", "2", "-o", out, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"out": str(out), "rows": 100, "ran": 100, "resumed": 0, "failed": 10}
    rows = rows_of(out)
    assert [int(r["point"]) for r in rows] == list(range(100))
    for r in rows:
        if r["grid.hbm.bandwidth"] == "-1 TB/s":
            assert "hbm.bandwidth" in r["error"] and "not a bandwidth" in r["error"] and r["cycles"] == ""
        else:
            assert r["error"] == "" and int(r["cycles"]) > 0 and r["method"] == "native"
            assert r["opt.m"] == r["grid.m"] and r["config.chip.cores"] == "24"
            assert float(r["config.hbm.bandwidth"].removesuffix(" B/s")) == \
                float(r["grid.hbm.bandwidth"].removesuffix(" TB/s")) * 1e12
    # More bandwidth never makes a memory-bound GEMV slower.
    m1 = [int(r["cycles"]) for r in rows if r["grid.m"] == "1" and not r["error"]]
    assert m1 == sorted(m1, reverse=True) and m1[0] > m1[-1]
    assert not [p for p in tmp_path.iterdir() if p.name != "sweep.csv"], "temporary files left behind"


class Counting:
    """A runner that records which points it was given, optionally yielding them in reverse order
    or stopping (as Ctrl-C would) after a number of rows."""

    def __init__(self, reverse: bool = False, stop_after: int | None = None):
        self.seen: list[int] = []
        self.reverse, self.stop_after = reverse, stop_after

    def run(self, points):
        for i, item in enumerate(SerialRunner().run(points[::-1] if self.reverse else points)):
            if self.stop_after is not None and i == self.stop_after:
                raise KeyboardInterrupt
            self.seen.append(item[0])
            yield item


def test_resume_runs_only_the_missing_points(tmp_path):
    s = spec("m=1,4", "hbm.bandwidth=0.8 TB/s,3.2 TB/s")
    full = tmp_path / "full.csv"
    run_sweep(s, full, SerialRunner())
    expected = full.read_text()
    lines = expected.splitlines(keepends=True)
    part = tmp_path / "part.csv"
    part.write_text(lines[0] + lines[1] + lines[3])  # points 0 and 2 done
    counting = Counting()
    outcome = run_sweep(s, part, counting)
    assert counting.seen == [1, 3] and outcome.resumed == 2 and outcome.ran == 2
    assert part.read_text() == expected
    again = Counting()
    assert run_sweep(s, part, again).ran == 0 and again.seen == []


def test_interrupted_sweep_keeps_finished_points_and_resumes(tmp_path):
    s = spec("m=1,2,4", "l2.enabled=true,false")
    out = tmp_path / "s.csv"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(s, out, Counting(stop_after=2))
    assert [r["point"] for r in rows_of(out)] == ["0", "1"]
    counting = Counting(reverse=True)  # completion order must not matter
    run_sweep(s, out, counting)
    assert sorted(counting.seen) == [2, 3, 4, 5]
    fresh = tmp_path / "fresh.csv"
    run_sweep(s, fresh, SerialRunner())
    assert out.read_text() == fresh.read_text()


def test_failed_points_are_retried_and_foreign_files_refused(tmp_path):
    s = spec("m=1,4")
    out = tmp_path / "s.csv"
    run_sweep(s, out, SerialRunner())
    text = out.read_text()
    broken = text.replace(",\n", ",lost worker\n", 1)  # the first row's empty error cell
    assert broken != text
    out.write_text(broken)
    counting = Counting()
    run_sweep(s, out, counting)
    assert counting.seen == [0] and out.read_text() == text
    from npusim.errors import NpusimError
    with pytest.raises(NpusimError, match="sweep over m, k, n"):
        run_sweep(spec("m=1,4", "l2.enabled=true,false"), out, SerialRunner())
    with pytest.raises(NpusimError, match="not points of this sweep"):
        run_sweep(spec("m=1"), out, SerialRunner())


def test_dask_cluster_gives_the_pool_rows(tmp_path, cli):
    distributed = pytest.importorskip("distributed")
    grid = ["--grid", "m=1,4,16", "--grid", "l2.enabled=true,false", "--grid", "k=256", "--grid", "n=256",
            "--method", "native"]
    pool_csv, dask_csv = tmp_path / "pool.csv", tmp_path / "dask.csv"
    res = cli("sweep", *grid, "--jobs", "2", "-o", pool_csv)
    assert res.exit_code == 0, res.output
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        res = cli("sweep", *grid, "--scheduler", cluster.scheduler_address, "-o", dask_csv)
        assert res.exit_code == 0, res.output
        # An open client works too (the caller keeps it).
        with distributed.Client(cluster, set_as_default=False) as client:
            via_client = tmp_path / "client.csv"
            run_sweep(spec("m=1,4,16", "l2.enabled=true,false"), via_client, DaskRunner(client=client))
    assert len(rows_of(pool_csv)) == 6 and all(r["error"] == "" for r in rows_of(pool_csv))
    assert dask_csv.read_text() == pool_csv.read_text()
    assert via_client.read_text() == pool_csv.read_text()


def test_pool_and_serial_agree(tmp_path):
    s = spec("m=1,16", "hbm.bandwidth=1.6 TB/s,3.2 TB/s")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    run_sweep(s, a, SerialRunner())
    run_sweep(s, b, PoolRunner(2))
    assert a.read_text() == b.read_text()
