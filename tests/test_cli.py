"""The command line as a new user meets it: real processes, real exit codes, real files."""

import json
import subprocess
import sys

import pytest

from npusim.config import preset_paths
from npusim.graph.io import graph_to_dict


def npusim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "npusim", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def run_json(*args):
    p = npusim(*args, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_run_gemm_json_fields():
    d = run_json("run", "gemm", "--hw", "910b", "--m", "16", "--k", "256", "--n", "128")
    for key in ("cycles", "time_us", "ops", "wall_s", "units", "traffic", "numerics"):
        assert key in d
    assert set(d["units"]) == {"cube", "vector", "mte1", "mte2", "mte3", "fixp"}
    assert set(d["units"]["cube"]) == {"busy_cycles", "instances", "utilization", "waiting_on"}
    assert sum(d["critical_path"].values()) == d["cycles"]
    assert set(d["traffic"]["by_role"]) == {"weight", "weight_scale", "activation", "kv_cache", "workspace",
                                            "partial", "output"}
    for k in ("hbm_read_bytes", "hbm_write_bytes", "l2_read_bytes", "l2_write_bytes"):
        assert isinstance(d["traffic"][k], int)
    assert d["numerics"]["exact"] is True and d["numerics"]["mismatches"] == 0
    assert d["time_us"] == pytest.approx(d["cycles"] / 1.8e3)
    assert run_json("run", "gemm", "--m", "4", "--k", "64", "--n", "64", "--no-numerics")["numerics"] is None


def test_same_seed_same_bytes(tmp_path):
    outs = []
    for i in range(2):
        trace = tmp_path / f"t{i}.json"
        p = npusim("run", "gemm", "--m", "20", "--k", "100", "--n", "50", "--seed", "9", "--json",
                   "--trace", str(trace))
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        d.pop("wall_s")  # measured wall time: the one field that is not a function of the inputs
        outs.append((json.dumps(d, sort_keys=True), trace.read_bytes()))
    assert outs[0] == outs[1]


def test_save_graph_then_run_graph_gives_the_same_run(tmp_path):
    gfile = tmp_path / "g.json"
    a = run_json("run", "gemm", "--m", "24", "--k", "96", "--n", "40", "--save-graph", str(gfile))
    b = run_json("run", "graph", str(gfile))
    for d in (a, b):
        d.pop("wall_s")
    assert a == b


def _bad_config(tmp_path, old, new):
    text = preset_paths()["910b"].read_text()
    assert old in text
    p = tmp_path / "bad.toml"
    p.write_text(text.replace(old, new))
    return p


def _tiny_graph(**overrides):
    g = {"format": "npusim-graph/1", "name": "tiny",
         "slots": [{"name": "a1", "core": 0, "unit": "aic", "buffer": "l1", "bytes": 4096},
                   {"name": "a0", "core": 0, "unit": "aic", "buffer": "l0a", "bytes": 4096}],
         "ops": [{"name": "x", "core": 0, "unit": "aic", "pipe": "MTE1", "kind": "dma", "path": "l1_to_l0a",
                  "bytes": 512, "role": "activation", "reads": ["a1"], "writes": ["a0"]},
                 {"name": "y", "core": 0, "unit": "aic", "pipe": "MTE1", "kind": "dma", "path": "l1_to_l0a",
                  "bytes": 512, "role": "activation", "reads": ["a1"], "writes": ["a0"], "deps": [0]}]}
    g.update(overrides)
    return g


@pytest.mark.parametrize("case", ["typo", "negative_bw", "tile_too_big", "cyclic", "never_resolves",
                                  "missing_file", "not_json", "bad_field_in_graph"])
def test_bad_input_one_message_exit_2_nothing_written(tmp_path, case):
    trace = tmp_path / "out.json"
    common = ["--trace", str(trace)]
    if case == "typo":
        cfg = _bad_config(tmp_path, "bandwidth = \"1.6 TB/s\"", "bandwith = \"1.6 TB/s\"")
        args, expect = ["run", "gemm", "--hw", str(cfg), "--m", "4", "--k", "4", "--n", "4"], "hbm.bandwith: unknown field"
    elif case == "negative_bw":
        args, expect = ["run", "gemm", "--m", "4", "--k", "4", "--n", "4", "--set", "hbm.bandwidth=-1.6 TB/s"], "hbm.bandwidth"
    else:
        gfile = tmp_path / "g.json"
        if case == "tile_too_big":
            g = _tiny_graph()
            g["slots"][1]["bytes"] = 100000
            expect = "L0A of core0.aic: live tiles need 100000 B but the buffer holds 65536 B"
        elif case == "cyclic":
            g = _tiny_graph()
            g["ops"][0]["deps"] = [1]
            expect = "dependency cycle"
        elif case == "never_resolves":
            g = _tiny_graph()
            g["ops"].insert(0, {"name": "z", "core": 0, "unit": "aic", "pipe": "MTE1", "kind": "dma",
                                "path": "l1_to_l0a", "bytes": 512, "role": "activation", "reads": ["a1"],
                                "writes": ["a0"], "deps": [2]})
            g["ops"][2]["deps"] = [1]
            g["ops"].append({"name": "w", "core": 0, "unit": "aic", "pipe": "CUBE", "kind": "mmad",
                             "m": 16, "k": 16, "n": 16, "dtype": "bf16", "deps": [1]})
            g["ops"][2]["deps"] = [3]
            expect = "cannot finish"
        elif case == "missing_file":
            g = None
            gfile = tmp_path / "nope.json"
            expect = "no such file"
        elif case == "not_json":
            gfile.write_text("{oops")
            g = None
            expect = "not valid JSON"
        else:
            g = _tiny_graph()
            g["ops"][0]["pipe"] = "MTE9"
            expect = "ops.0.pipe"
        if g is not None:
            gfile.write_text(json.dumps(g))
        args = ["run", "graph", str(gfile)]
    p = npusim(*args, *common)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert expect in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("error:")
    assert list(tmp_path.glob("out.json*")) == [] and list(tmp_path.glob(".out.json*")) == []


def test_validate_command(tmp_path):
    assert npusim("validate", "configs/910b.toml", cwd=str(preset_paths()["910b"].parents[1])).returncode == 0
    bad = _bad_config(tmp_path, "cores = 24", "cores = -24")
    p = npusim("validate", str(bad))
    assert p.returncode == 2 and "chip.cores" in p.stderr


def test_presets_command_lists_both():
    p = npusim("presets")
    assert p.returncode == 0 and "910b" in p.stdout and "950" in p.stdout


def test_usage_error_is_exit_2_without_traceback():
    p = npusim("run", "gemm", "--m", "x", "--k", "4", "--n", "4")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_graph_round_trip_is_lossless(cfg910):
    from npusim.graph.io import graph_from_dict
    from npusim.kernels.gemm.native import build_gemm_native
    g = build_gemm_native(cfg910, 20, 70, 30, cores=2)
    d = graph_to_dict(g)
    assert graph_to_dict(graph_from_dict(json.loads(json.dumps(d)))) == d


def test_attention_out_option_is_checked():
    r = subprocess.run([sys.executable, "-m", "npusim", "run", "attention", "--out", "fp16"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--out 'fp16': choose bf16 or fp32" in r.stderr and "Traceback" not in r.stderr
