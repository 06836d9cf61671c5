"""Shipped workloads load; compare --workload totals GEMMs and attention over the model's layers."""

import pytest

from npusim.errors import NpusimError
from npusim.report.compare import run_workload_comparison
from npusim.workloads.load import load_workload, workload_paths

TINY = """
[workload]
name = "tiny"
source = "test"
layers = 3

[phases]
decode_b2 = 2
prefill_512 = 512

[[gemm]]
name = "proj"
k = 256
n = 512
count = 2

[[attention]]
name = "gqa"
q_heads = 4
kv_heads = 2
head_dim = 64
contexts = [300]
"""


def test_shipped_workloads_load():
    names = set(workload_paths())
    assert {"llama-3.1-8b", "llama-3.1-70b", "deepseek-v3"} <= names
    for name in names:
        wl = load_workload(name)
        assert wl.workload.source and wl.attention
        assert set(wl.phases) == {"decode_b1", "decode_b16", "decode_b64", "prefill_2048"}


def test_workload_totals_weight_each_shape_by_count_and_layers(tmp_path, cfg910):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    res = run_workload_comparison(cfg910, load_workload(str(p)), "decode_b2")
    rows = {r["method"]: r for r in res["gemms"][0]["rows"]}
    att = {r["method"]: r for r in res["attention"][0]["rows"]}
    for tot in res["totals"]:
        m = tot["method"]
        assert tot["cycles"] == 2 * 3 * rows[m]["cycles"] + 3 * att[m]["cycles"]
    # a prefill phase leaves attention out (chunks of more than 256 queries are not modelled)
    assert run_workload_comparison(cfg910, load_workload(str(p)), "prefill_512")["attention"] == []


def test_bad_workload_names_the_field(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(TINY.replace("k = 256", "kk = 256"))
    with pytest.raises(NpusimError, match="gemm.0.kk"):
        load_workload(str(p))
    good = tmp_path / "good.toml"
    good.write_text(TINY)
    with pytest.raises(NpusimError, match="no phase 'decode_b9'"):
        load_workload(str(good)).tokens("decode_b9")
