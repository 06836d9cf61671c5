"""`npusim inspect` reads a trace alone and reports what the run that wrote it reported."""

from __future__ import annotations

import json

from npusim.analysis.inspect import inspect_run, window_critical_path, window_waiting_on
from npusim.analysis.tracefile import open_trace
from npusim.analysis.window import Window, make_window
from npusim.report.attribution import Attribution
from npusim.report.metrics import UNIT_KEYS


def test_inspect_json_matches_the_live_run(traces, cli):
    live = traces["chip"]
    res = cli("inspect", live.path, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["cycles"] == live.doc["cycles"]
    assert doc["critical_path"] == live.doc["critical_path"]
    assert sum(doc["critical_path"].values()) == live.doc["cycles"]
    for key in UNIT_KEYS:
        for field in ("busy_cycles", "instances", "utilization", "waiting_on"):
            assert doc["units"][key][field] == live.doc["units"][key][field], (key, field)
    assert doc["units"]["mte2"]["busy_cycles"] > 0


def test_windowed_numbers_add_up_to_the_whole_run(traces):
    run = open_trace(traces["no_l2"].path)
    att = Attribution(run.cfg, run.ops)
    whole = Window(0, run.cycles, None)
    # The window code path (blame per gap) agrees with the report's own whole-run attribution.
    assert window_waiting_on(att, run, whole) == att.waiting_on()
    cut = run.cycles // 3
    left, right = window_critical_path(run, att, Window(0, cut, None)), \
        window_critical_path(run, att, Window(cut, run.cycles, None))
    total = {c: left.get(c, 0) + right.get(c, 0) for c in set(left) | set(right)}
    assert total == att.critical_path()
    # Busy cycles of two adjacent windows add up to the run's.
    a, b = inspect_run(run, make_window(run, None, 0, cut)), inspect_run(run, make_window(run, None, cut, None))
    full = inspect_run(run, make_window(run))
    for key in UNIT_KEYS:
        assert a["units"][key]["busy_cycles"] + b["units"][key]["busy_cycles"] == full["units"][key]["busy_cycles"]


def test_stalls_name_the_ops_on_both_sides(traces):
    run = open_trace(traces["chip"].path)
    doc = inspect_run(run, make_window(run, [0]), top=3)
    assert doc["stalls"], "a bandwidth-bound GEMM has stalls"
    s = doc["stalls"][0]
    assert s["core"] == 0 and s["before"] is not None and s["after"] is not None
    assert s["before"]["end"] <= s["from"] < s["to"] <= s["after"]["start"]
    assert sum(s["causes"].values()) == s["cycles"]
    lengths = [x["cycles"] for x in doc["stalls"]]
    assert lengths == sorted(lengths, reverse=True)


def test_terminal_view_fits_80_columns(traces, cli):
    res = cli("inspect", traces["chip"].path, "--core", "0", "--from", "100", "--to", "2000")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for pipe in ("c0 AIC MTE2", "c0 AIC CUBE", "critical path", "longest stalls"):
        assert pipe in out
    assert max(len(line) for line in out.splitlines()) <= 80
    timeline = [line for line in out.splitlines() if line.startswith("c0 AIC CUBE")]
    assert len(timeline) == 1 and set(timeline[0][15:]) <= set(" ░▒▓█")


def test_inspect_matches_npusim_run_end_to_end(tmp_path, cli):
    """The trace written by the real command line, read back in another process, on its own."""
    import subprocess
    import sys
    trace = tmp_path / "a.json"
    p = subprocess.run([sys.executable, "-m", "npusim", "run", "gemm", "--m", "16", "--k", "1024", "--n", "1024",
                        "--no-numerics", "--trace", str(trace), "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    live = json.loads(p.stdout)
    doc = json.loads(cli("inspect", trace, "--json").stdout)
    assert doc["cycles"] == live["cycles"] and doc["critical_path"] == live["critical_path"]
    assert {k: u["busy_cycles"] for k, u in doc["units"].items()} == \
        {k: u["busy_cycles"] for k, u in live["units"].items()}
    assert {k: u["waiting_on"] for k, u in doc["units"].items()} == \
        {k: u["waiting_on"] for k, u in live["units"].items()}
