"""Closed-form attention models against the simulator (issue 6): GM traffic by role exact (HBM bytes too
with L2 off), the model's plan is the builder's, cycles within 10 % where the schedule is in steady state,
and the attention decode points of the `npusim verify` grid."""

from __future__ import annotations

import pytest

from npusim.config import load_config
from npusim.kernels.attention.build import attention_schedule, build_attention, plan_candidates
from npusim.model.attention import model_attention, schedule_cycles
from npusim.model.base import model_for
from npusim.model.verify import (ATTN_CONTEXTS, ATTN_METHODS, ATTN_SHAPES, STEADY_TILES, TOLERANCE, AttnPoint,
                                 attention_grid, check_traffic, grid, run_point, sim_traffic)
from npusim.report.run_report import run_json
from npusim.sim.run import simulate

GQA = ATTN_SHAPES["gqa"]
MLA = ATTN_SHAPES["mla"]
L2_OFF = ["l2.enabled=false"]

# Steady-state points (>= STEADY_TILES KV blocks per core) where the model is known to miss by more than
# TOLERANCE, with the reason (docs/attention.md, "Closed-form model"): the MLA dequant baseline on 910b runs
# 8-token dequant chunks (its UB is full) whose loads stall behind the softmax on the in-order Vector.
# none since the model prices dequant's chunk / softmax loop on the AIV (910b MLA dequant 32k: 1.18 -> 1.08)
KNOWN_OUTSIDE: dict = {}


def _sim_and_model(cfg, method, **kw):
    doc = run_json(simulate(build_attention(cfg, method=method, **kw), cfg, numerics=False))
    return doc, model_attention(cfg, method=method, **kw)


@pytest.mark.parametrize("method", ATTN_METHODS)
@pytest.mark.parametrize("shape", ["gqa", "mla"])
def test_traffic_exact_all_hbm(shape, method):
    """L2 off: every GM byte is an HBM byte, so the model's ledger must equal the simulator's, role by role,
    reads and writes, HBM included."""
    cfg = load_config("910b", L2_OFF)
    kw = dict(ATTN_SHAPES[shape], q_len=1, kv_len=4096)
    doc, mod = _sim_and_model(cfg, method, **kw)
    sim = sim_traffic(doc, False)
    assert not check_traffic(sim, mod.traffic)
    for role, v in sim.items():
        assert v["read_bytes"] == mod.traffic[role]["read_bytes"] == v["hbm_read_bytes"], role
        assert v["write_bytes"] == mod.traffic[role]["write_bytes"] == v["hbm_write_bytes"], role
    assert doc["traffic"]["hbm_read_bytes"] + doc["traffic"]["hbm_write_bytes"] == mod.hbm_bytes_expected


@pytest.mark.parametrize("hw,overrides,kw", [
    ("910b", [], dict(GQA, q_len=16, kv_len=1000)),                       # prefill chunk, row groups
    ("950", [], dict(GQA, q_len=1, kv_len=4096)),                          # UB->L1 dequant hand-off
    ("950", L2_OFF, dict(MLA, q_len=1, kv_len=4096)),
    ("910b", [], dict(batch=2, q_heads=8, kv_heads=2, head_dim=64, q_len=4, kv_len=300, cores=5)),  # ragged
    ("910b", [], dict(GQA, q_len=1, kv_len=1000, out="fp32")),
], ids=["gqa-prefill", "950-gqa", "950-mla-all-hbm", "batch-ragged", "fp32-out"])
@pytest.mark.parametrize("method", ATTN_METHODS)
def test_traffic_exact_by_role(hw, overrides, kw, method):
    """GM bytes by role exact on every schedule variant; HBM bytes within the model's range (L2 on)."""
    cfg = load_config(hw, overrides)
    doc, mod = _sim_and_model(cfg, method, **kw)
    assert not check_traffic(sim_traffic(doc, cfg.l2.enabled), mod.traffic)
    assert all(doc["meta"][k] == v for k, v in mod.plan.items())   # the model reads the builder's plan


def test_direct_dequant_has_no_workspace(cfg950):
    mod = model_attention(cfg950, method="dequant", **GQA, q_len=1, kv_len=4096)
    assert mod.plan["kv_handoff"] == "ub_to_l1" and "workspace" not in mod.traffic


def test_plan_is_the_fastest_modelled_candidate(cfg910):
    kw = dict(MLA, q_len=1, kv_len=32768)
    s = attention_schedule(cfg910, method="msd", **kw)
    cands = plan_candidates(cfg910, rows=128, dk=576, dv=512, kv_len=32768, q_len=1, latent=True, method="msd",
                            passes=2, kv_groups=1, cores=24)
    assert len(cands) > 10 and s.plan in cands
    best = schedule_cycles(cfg910, s)
    for pl in cands[::7]:
        other = attention_schedule(cfg910, method="msd", block=pl.block, kv_slots=pl.kv_slots, **kw)
        assert best <= schedule_cycles(cfg910, other) + 1


def test_registered_and_in_the_verify_grid():
    assert model_for("attention", "msd")(load_config("910b"), **GQA, q_len=1, kv_len=4096).kernel == "attention"
    pts = attention_grid(["910b", "950"])
    assert len(pts) == 2 * len(ATTN_SHAPES) * len(ATTN_CONTEXTS) * len(ATTN_METHODS)
    assert {p.kv_len for p in pts} == {4096, 32768} and {p.method for p in pts} == set(ATTN_METHODS)
    full = grid(["910b"])
    assert [p for p in full if p.kernel == "attention"] == attention_grid(["910b"])
    assert not [p for p in grid(["910b"], quick=True) if p.kernel == "attention"]


@pytest.mark.parametrize("method", ATTN_METHODS)
def test_verify_row_4k(method):
    r = run_point(AttnPoint("attention", method, "910b", "gqa", 4096))
    assert r["traffic_ok"] and not r["plan_mismatches"]
    assert abs(r["ratio"] - 1) <= 0.15, r["ratio"]
    assert r["within_tolerance"] or r["note"]


@pytest.mark.slow
@pytest.mark.parametrize("hw", ["910b", "950"])
def test_verify_rows_32k_within_tolerance(hw):
    """Every 32k decode point is in steady state; the model is within 10 % (KNOWN_OUTSIDE: documented)."""
    for p in [p for p in attention_grid([hw]) if p.kv_len == 32768]:
        r = run_point(p)
        assert r["traffic_ok"] and not r["plan_mismatches"], (p, r["traffic_mismatches"], r["plan_mismatches"])
        assert r["steady_items"] >= STEADY_TILES, p
        limit = KNOWN_OUTSIDE.get((hw, p.method, p.shape))
        if limit is None:
            assert abs(r["ratio"] - 1) <= TOLERANCE, (p, r["ratio"])
        else:
            assert abs(r["ratio"] - 1) <= limit - 1 and r["note"], (p, r["ratio"])
