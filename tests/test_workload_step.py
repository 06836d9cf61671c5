"""A model step kernel by kernel: `run workload` (one timeline, streamed trace) and `compare --layers`."""

import json
import subprocess
import sys

import pytest

from npusim.config import load_config
from npusim.errors import NpusimError
from npusim.report.compare import run_workload_comparison
from npusim.trace.read import trace_records
from npusim.trace.validate import validate_trace
from npusim.workloads.load import load_workload
from npusim.workloads.step import compare_step, run_step, step_kernels

TINY = """
[workload]
name = "tiny"
source = "test"
layers = 3

[phases]
decode_b2 = 2

[[gemm]]
name = "proj"
k = 256
n = 512
count = 2

[[gemm]]
name = "dense"
k = 256
n = 256
layers = 1

[[gemm]]
name = "expert"
k = 256
n = 384
layers = 2
first_layer = 1

[[attention]]
name = "gqa"
q_heads = 4
kv_heads = 2
head_dim = 64
contexts = [300]
"""


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return load_workload(p)


def test_layers_follow_first_layer_and_count(tiny):
    names = [[k.name for k in step_kernels(tiny, 2, 3, None) if k.layer == layer] for layer in range(3)]
    assert names == [["proj", "proj", "dense", "gqa"], ["proj", "proj", "expert", "gqa"],
                     ["proj", "proj", "expert", "gqa"]]


def test_a_part_outside_the_model_is_refused(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(TINY.replace("first_layer = 1", "first_layer = 2"))
    with pytest.raises(NpusimError, match="expert: layers 2..3 are outside the model's 3 layers"):
        load_workload(p)


def test_every_layer_simulated_gives_the_multiplied_totals(tiny):
    """Layers are identical and the simulation deterministic, so simulating all of them must give what
    compare --workload obtains by simulating each distinct shape once and multiplying."""
    cfg = load_config("910b")
    step = compare_step(cfg, tiny, None, layers="all")
    multiplied = run_workload_comparison(cfg, tiny, None)
    assert step["kernels_simulated"] == 3 * (2 + 1 + 1) * 3  # layers x kernels x methods
    assert step["totals"] == multiplied["totals"]
    assert [row["layer"] for row in step["per_layer"]] == [0, 1, 2]


def test_run_step_is_one_timeline_with_a_streamed_trace(tiny, tmp_path):
    cfg = load_config("910b")
    out = tmp_path / "step.json"
    doc = run_step(cfg, tiny, None, "msd", layers=2, numerics=True, trace=str(out))
    assert doc["kernels_simulated"] == 8 and doc["exact"] is True
    by_name = {k["name"]: k for k in doc["kernels"]}
    assert by_name["proj"]["count"] == 4 and by_name["expert"]["count"] == 1
    assert doc["cycles"] == sum(k["cycles"] for k in doc["kernels"])
    trace = json.loads(out.read_text())
    assert validate_trace(trace) == []
    records, _ = trace_records(trace)
    assert len(records) == doc["ops"] == len({r.index for r in records})
    assert max(r.end for r in records) == doc["cycles"] == trace["metadata"]["makespan_cycles"]
    kernels = trace["metadata"]["kernels"]
    for a, b in zip(kernels, kernels[1:]):
        assert b["start_cycle"] == a["start_cycle"] + a["cycles"] and b["first_op"] == a["first_op"] + a["ops"]
    # kernel k's ops lie inside its slot of the timeline
    for k in kernels:
        mine = [r for r in records if k["first_op"] <= r.index < k["first_op"] + k["ops"]]
        assert min(r.start for r in mine) >= k["start_cycle"]
        assert max(r.end for r in mine) <= k["start_cycle"] + k["cycles"]


def test_run_step_is_deterministic(tiny, tmp_path):
    cfg = load_config("910b")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run_step(cfg, tiny, None, "dequant", layers=1, trace=str(a))
    run_step(cfg, tiny, None, "dequant", layers=1, trace=str(b))
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--layers", "0"], "--layers 0: tiny has 3 layers"),
    (["--layers", "some"], "--layers 'some': give 'all' or a number"),
    (["--method", "direct"], "--method 'direct': a model step runs native, dequant or msd"),
])
def test_run_workload_bad_input_is_one_message(tiny, tmp_path, args, message):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    r = subprocess.run([sys.executable, "-m", "npusim", "run", "workload", "--workload", str(p), *args],
                       capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
