"""`npusim diff` names the stall causes that appeared or vanished and the makespan change."""

from __future__ import annotations

import json


def test_diff_names_vanished_and_appeared_causes(traces, cli):
    chip, one = traces["chip"], traces["one_core"]
    res = cli("diff", chip.path, one.path, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["makespan"]["delta"] == one.doc["cycles"] - chip.doc["cycles"]
    assert doc["makespan"]["a"] == chip.doc["cycles"] and doc["makespan"]["b"] == one.doc["cycles"]
    # 24 cores streaming share the chip's HBM bandwidth; a lone core gets its port rate: the Cube's
    # waiting on the HBM share is present in A and absent in B.
    assert "hbm" in chip.doc["units"]["cube"]["waiting_on"] and "hbm" not in one.doc["units"]["cube"]["waiting_on"]
    assert "hbm" in doc["causes"]["cube"]["vanished"]
    assert "hbm" in doc["causes"]["critical_path"]["vanished"]
    assert doc["causes"]["cube"]["cycles"]["hbm"] == {
        "a": chip.doc["units"]["cube"]["waiting_on"]["hbm"], "b": 0, "delta": -chip.doc["units"]["cube"]["waiting_on"]["hbm"]}
    # The other way round, the same cause appeared.
    back = json.loads(cli("diff", one.path, chip.path, "--json").stdout)
    assert "hbm" in back["causes"]["cube"]["appeared"] and back["causes"]["cube"]["vanished"] == []
    assert back["makespan"]["delta"] == -doc["makespan"]["delta"]
    assert doc["kernel"]["cores"] == {"a": 24, "b": 1}


def test_diff_reports_config_and_traffic_changes(traces, cli):
    on, off = traces["chip"], traces["no_l2"]
    doc = json.loads(cli("diff", on.path, off.path, "--json").stdout)
    assert doc["config"] == {"l2.enabled": {"a": True, "b": False}}
    act = doc["traffic"]["by_role"]["activation"]
    on_act, off_act = on.doc["traffic"]["by_role"]["activation"], off.doc["traffic"]["by_role"]["activation"]
    assert act["l2_read_bytes"] == {"a": on_act["l2_read_bytes"], "b": 0, "delta": -on_act["l2_read_bytes"]}
    assert act["hbm_read_bytes"]["delta"] == off_act["hbm_read_bytes"] - on_act["hbm_read_bytes"] > 0
    assert doc["units"]["mte2"]["busy_cycles"]["delta"] == \
        off.doc["units"]["mte2"]["busy_cycles"] - on.doc["units"]["mte2"]["busy_cycles"]
    text = cli("diff", on.path, off.path)
    assert text.exit_code == 0 and "makespan" in text.stdout and "l2.enabled" in text.stdout


def test_diff_of_dequant_and_msd_names_the_vector_cube_stall_vanished(tmp_path):
    """The same decode GEMM, dequant baseline vs MSD-2: the Cube's wait on vector-side work vanishes."""
    from npusim.analysis.diff import diff_runs
    from npusim.analysis.tracefile import open_trace
    from npusim.config import load_config
    from npusim.kernels.gemm.quant import build_gemm
    from npusim.sim.run import simulate
    from npusim.trace.chrome import save_trace
    cfg = load_config("910b")
    paths = []
    for method in ("dequant", "msd"):
        g = build_gemm(cfg, 16, 4096, 4096, method=method, weights="int8")
        res = simulate(g, cfg, numerics=False)
        p = tmp_path / f"{method}.json"
        save_trace(p, cfg, g, res.records.ops, res.cycles, 0, res.records.writebacks)
        paths.append(p)
    doc = diff_runs(open_trace(paths[0]), open_trace(paths[1]))
    assert doc["vector_cube_stall"]["verdict"] == "vanished", doc["vector_cube_stall"]
    assert doc["makespan"]["b"] < doc["makespan"]["a"]
