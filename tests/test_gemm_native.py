"""bf16 GEMM on the simulator: exact numerics, throughput against peak, streaming against HBM."""

import pytest
from hypothesis import given, settings, strategies as st

from npusim.config import load_config
from npusim.graph.validate import buffer_capacity
from npusim.graph.ops import Buffer
from npusim.hw import costs
from npusim.kernels.gemm.native import build_gemm_native
from npusim.report.metrics import traffic_summary, unit_summary
from npusim.report.run_report import run_json
from npusim.sim.run import simulate
from npusim.trace.occupancy import buffer_occupancy


@pytest.mark.parametrize("m,k,n,cores", [(1, 4096, 256, 24), (1, 33, 17, 3), (33, 200, 70, 24),
                                         (130, 1000, 300, 5), (17, 64, 513, 24), (256, 256, 256, 1)])
def test_exact_numerics_on_odd_shapes(cfg910, m, k, n, cores):
    res = simulate(build_gemm_native(cfg910, m, k, n, cores), cfg910, seed=3)
    assert res.numerics.exact, res.numerics
    assert res.numerics.mismatches == 0 and res.numerics.elements == m * n
    assert 0 < res.numerics.rel_l2_vs_fp64 < 1e-2  # bf16 output rounding


def test_bf16_gemm_4096_reaches_90_percent_of_peak(cfg910):
    res = simulate(build_gemm_native(cfg910, 4096, 4096, 4096), cfg910, numerics=False)
    doc = run_json(res)
    frac = doc["achieved_tflops"] / doc["peak_bf16_tflops"]
    assert 0.90 <= frac <= 1.0, frac
    assert doc["units"]["cube"]["utilization"] <= 1.0


def test_gemv_streams_at_90_percent_of_hbm_and_never_above(cfg910):
    res = simulate(build_gemm_native(cfg910, 1, 4096, 4096), cfg910, numerics=False)
    doc = run_json(res)
    bw = cfg910.hbm_bytes_per_cycle
    achieved = doc["traffic"]["hbm_read_bytes"] / res.cycles
    assert achieved >= 0.90 * bw, achieved / bw
    # the busiest HBM window never carries more than the chip bandwidth allows
    assert res.hbm_peak_bytes_per_cycle <= bw * (1 + 1e-9)
    assert res.hbm_peak_bytes_per_cycle > 0.99 * bw  # and the check is not vacuous: it is saturated


def test_one_core_never_exceeds_its_port_rate(cfg910):
    res = simulate(build_gemm_native(cfg910, 1, 4096, 2048, cores=1), cfg910, numerics=False)
    checked = 0
    for r in res.records.ops:
        if r.kind != "dma":
            continue
        port = costs.port(cfg910, r.path)
        fixed = port.start_cycles + (cfg910.hbm.first_byte_cycles if r.level == "hbm" and r.path.startswith("gm_") else 0)
        assert r.nbytes / (r.end - r.start - fixed) <= port.rate_bytes_per_cycle + 1e-9
        checked += 1
    assert checked > 100
    # and a lone core's HBM stream is capped by its GM->L1 port, far below the chip bandwidth
    doc = run_json(res)
    assert doc["traffic"]["hbm_read_bytes"] / res.cycles <= costs.port(cfg910, "gm_to_l1").rate_bytes_per_cycle


def test_all_hbm_switch_sends_every_byte_to_hbm(cfg910):
    cfg = load_config("910b", ["l2.enabled=false"])
    doc = run_json(simulate(build_gemm_native(cfg, 64, 512, 512), cfg, numerics=False))
    t = doc["traffic"]
    assert t["l2_read_bytes"] == 0 and t["l2_write_bytes"] == 0
    assert t["hbm_write_bytes"] == 64 * 512 * 2


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 300), n=st.integers(1, 200), cores=st.integers(1, 24),
       l2=st.booleans())
def test_run_invariants(m, k, n, cores, l2):
    cfg = load_config("910b", [] if l2 else ["l2.enabled=false"])
    g = build_gemm_native(cfg, m, k, n, cores)
    res = simulate(g, cfg, seed=m + k + n)
    ops = res.records.ops
    assert res.numerics.exact
    assert len(ops) == len(g.ops)
    # no two ops overlap on one pipe
    by_pipe = {}
    for r in ops:
        by_pipe.setdefault((r.core, r.unit, r.pipe), []).append((r.start, r.end))
    for spans in by_pipe.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    # busy <= makespan, per pipe instance and per pipe kind
    for key, u in unit_summary(ops, res.cycles).items():
        assert u["busy_cycles"] <= u["instances"] * res.cycles
        assert 0.0 <= u["utilization"] <= 1.0
    # buffer occupancy stays within [0, capacity]
    for (core, unit, buf), points in buffer_occupancy(g, ops).items():
        cap = buffer_capacity(cfg, Buffer(buf))
        assert all(0 <= b <= cap for _, b in points), (buf, max(b for _, b in points), cap)
        assert points[-1][1] == 0
    # bytes moved equal the sum over ops: every GM byte is counted once, at one level
    t = traffic_summary(ops, res.records.writebacks)
    gm_read = sum(op.nbytes for op in g.ops if op.path is not None and op.path.reads_gm)
    gm_write = sum(op.nbytes for op in g.ops if op.path is not None and op.path.writes_gm)
    assert t["hbm_read_bytes"] + t["l2_read_bytes"] == gm_read
    assert (t["l2_write_bytes"] if l2 else t["hbm_write_bytes"]) == gm_write
    assert t["hbm_write_bytes"] == gm_write  # with L2 on, every dirty byte is written back (evict or flush)
    assert sum(v["hbm_read_bytes"] for v in t["by_role"].values()) == t["hbm_read_bytes"]
