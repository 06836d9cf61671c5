"""Quantized GEMM schedules (issue 4): exact numerics, where the Cube stalls, and where the bytes go."""

import pytest
from hypothesis import given, settings, strategies as st

from npusim.config import load_config
from npusim.errors import GraphError
from npusim.kernels.gemm import quant
from npusim.kernels.gemm.quant import build_gemm
from npusim.kernels.gemm.tiling import GemmTiling, assign_tiles, choose_gemm_tiling, l2_share
from npusim.report.attribution import vector_side
from npusim.report.compare import run_gemm_comparison
from npusim.report.run_report import run_json
from npusim.sim.run import simulate

K = N = 4096


def run(cfg, m, k, n, numerics=False, **kw):
    return run_json(simulate(build_gemm(cfg, m, k, n, **kw), cfg, seed=2, numerics=numerics))


@pytest.mark.parametrize("hw", ["910b", "950"])
@pytest.mark.parametrize("m,k,n,cores", [(1, 256, 96, 24), (5, 384, 70, 3), (33, 640, 200, 24), (16, 1024, 512, 24)])
@pytest.mark.parametrize("method,weights,passes", [("dequant", "int8", 2), ("dequant", "int8-g128", 2),
                                                   ("msd", "int8", 1), ("msd", "int8", 2), ("msd", "int8", 3)])
def test_every_method_is_exact(hw, m, k, n, cores, method, weights, passes):
    cfg = load_config(hw)
    if weights == "int8-g128" and k % 128:
        pytest.skip("group-128 weights need K % 128 == 0")
    d = run(cfg, m, k, n, numerics=True, cores=cores, method=method, weights=weights, passes=passes)
    assert d["numerics"]["exact"] and d["numerics"]["mismatches"] == 0, d["numerics"]


def test_the_direct_paths_are_used_where_the_preset_has_them():
    assert build_gemm(load_config("950"), 4, 256, 256, method="dequant", weights="int8").meta["handoff"] == "ub_to_l1"
    assert build_gemm(load_config("910b"), 4, 256, 256, method="dequant", weights="int8").meta["handoff"] == "gm_workspace"
    assert build_gemm(load_config("950"), 4, 256, 256, method="msd", weights="int8").meta["partials"] == "l0c_to_ub"


@pytest.mark.parametrize("m", [1, 4, 16])
def test_decode_stall_moves_from_vector_side_to_hbm(cfg910, m):
    """Under dequant, AIV-side work (aiv.* and workspace transfers) is >= 50 % of the critical path; under
    MSD-2 it is <= 10 % and MSD-2 runs within 15 % of the HBM roofline (int8 weight bytes / bandwidth)."""
    deq = run(cfg910, m, K, N, method="dequant", weights="int8")
    msd = run(cfg910, m, K, N, method="msd", weights="int8")
    assert sum(deq["critical_path"].values()) == deq["cycles"]
    assert vector_side(deq["critical_path"]) >= 0.5 * deq["cycles"]
    assert vector_side(msd["critical_path"]) <= 0.10 * msd["cycles"]
    roofline = K * N / cfg910.hbm_bytes_per_cycle
    assert msd["cycles"] <= 1.15 * roofline, msd["cycles"] / roofline
    # the Cube waits on the vector side far less under MSD
    assert vector_side(msd["units"]["cube"]["waiting_on"]) < 0.2 * vector_side(deq["units"]["cube"]["waiting_on"])


def test_two_int8_passes_cost_the_cube_what_one_bf16_pass_costs(cfg910):
    """Equal tiling (same m0, n0, k0, k1), so both issue the same number of mmads: p x M rows at the int8
    rate (2x bf16) take the fractal steps of M rows at the bf16 rate."""
    t = choose_gemm_tiling(cfg910, 16, K, N, cfg910.chip.cores)
    native = run(cfg910, 16, K, N, method="native", weights="bf16", tiling=t)
    msd = run(cfg910, 16, K, N, method="msd", weights="int8", passes=2, tiling=t)
    a, b = native["units"]["cube"]["busy_cycles"], msd["units"]["cube"]["busy_cycles"]
    assert abs(a - b) <= 0.01 * a, (a, b)


def test_traffic_ledger_under_the_all_hbm_switch():
    """Dequant moves 4 B of workspace per weight element at one row tile: each AIV piece writes its bf16
    elements once, and the AIC reads every element back once (one read per L1 chunk, covering several
    pieces: fewer reads, the same bytes); MSD reads each int8 weight byte once and has no weight-sized
    workspace."""
    cfg = load_config("910b", ["l2.enabled=false"])
    deq = run(cfg, 16, K, N, method="dequant", weights="int8")["traffic"]["by_role"]
    msd = run(cfg, 16, K, N, method="msd", weights="int8")["traffic"]["by_role"]
    ws = deq["workspace"]["hbm_read_bytes"] + deq["workspace"]["hbm_write_bytes"]
    assert ws == 4 * K * N
    assert deq["weight"]["hbm_read_bytes"] == msd["weight"]["hbm_read_bytes"] == K * N
    # MSD's workspace is activation-sized: the 2 int8 passes (2 x M x K) written once and read by every
    # core, plus per-piece row maxima; nothing of weight size
    msd_extra = msd["workspace"]["hbm_read_bytes"] + msd["workspace"]["hbm_write_bytes"]
    assert msd_extra <= (cfg.chip.cores + 1) * 2 * 16 * K + 64 * 1024


def test_dequant_aic_chunk_spans_several_aiv_pieces(cfg910):
    """The AIC's L1 chunk is sized from L1, the AIVs' dequant piece from UB: one workspace read (GM -> L1)
    takes a chunk that several AIV pieces wrote, waits for every one of them, and hits in L2."""
    g = build_gemm(cfg910, 256, K, N, method="dequant", weights="int8")
    k1, piece = g.meta["tiling"]["k1"], g.meta["dequant_piece_k"]
    assert k1 >= 2 * piece
    written = {(op.gm.tensor, op.gm.region): i for i, op in enumerate(g.ops) if op.name.startswith("st_wdeq")}
    reads = [op for op in g.ops if op.name.startswith("ld_wdeq")]
    assert len(reads) > len(written) // 2 and any(len(op.deps) > 1 for op in reads)
    for op in reads:
        (ka, kb), cols = op.gm.region
        pieces = sorted(r for (_, r) in written if r[1] == cols and ka <= r[0][0] < kb)
        bounds = [b for (a, b), _ in pieces]
        assert [a for (a, _), _ in pieces] == [ka] + bounds[:-1] and bounds[-1] == kb   # they tile the chunk
        assert {written[("w_deq", r)] for r in pieces} <= set(op.deps)
    ws = run(cfg910, 256, K, N, method="dequant", weights="int8")["traffic"]["by_role"]["workspace"]
    assert ws["hbm_read_bytes"] == 0 and ws["l2_read_bytes"] == 2 * K * N * 2   # two row tiles, all from L2


@pytest.mark.slow
def test_prefill_msd_is_not_faster_and_compare_shows_why(cfg910):
    rows = {r["compare"]["method"]: r for r in run_gemm_comparison(cfg910, 2048, K, N, numerics=False)}
    deq, msd = rows["dequant"], rows["msd-2"]
    # MSD's decode advantage is gone: at prefill MSD-2 is not faster than the dequant baseline
    assert msd["cycles"] >= deq["cycles"]
    # why: MSD's vector work and int32 partials grow with M; dequant's vector work does not
    assert msd["units"]["vector"]["busy_cycles"] > deq["units"]["vector"]["busy_cycles"]
    part = msd["traffic"]["by_role"]["partial"]
    assert part["l2_write_bytes"] + part["hbm_write_bytes"] >= 2 * 2048 * N * 4
    small = run(cfg910, 16, K, N, method="msd", weights="int8")
    assert small["units"]["vector"]["busy_cycles"] * 50 < msd["units"]["vector"]["busy_cycles"]
    # and the comparison table's columns say so
    assert msd["compare"]["partial_bytes"] == part["l2_write_bytes"] + part["l2_read_bytes"] + part["hbm_read_bytes"]
    assert deq["compare"]["partial_bytes"] == 0 and msd["compare"]["partial_bytes"] >= 2 * 2 * 2048 * N * 4
    assert msd["compare"]["vector_busy_cycles"] > deq["compare"]["vector_busy_cycles"]


def test_methods_a_preset_cannot_run_are_refused_with_the_reason(cfg910):
    with pytest.raises(GraphError, match="per-channel int8"):
        build_gemm(cfg910, 4, 256, 256, method="msd", weights="int8-g128")
    with pytest.raises(GraphError, match="preset 910b has none .the 950 preset does"):
        build_gemm(cfg910, 4, 256, 256, method="direct", weights="mxfp4")
    with pytest.raises(GraphError, match="takes --weights mxfp4"):
        build_gemm(cfg910, 4, 256, 256, method="direct", weights="int8")
    with pytest.raises(GraphError, match="K a multiple of 128"):
        build_gemm(cfg910, 4, 200, 256, method="dequant", weights="int8-g128")
    with pytest.raises(GraphError, match="int32-safe"):
        build_gemm(cfg910, 1, 140000, 16, method="msd", weights="int8")


@pytest.mark.parametrize("method", ["native", "dequant", "msd"])
def test_more_hbm_bandwidth_never_slows_decode(method):
    """Regression: the dequant tiling estimate once miscounted the AIVs' pieces and, with HBM x2, picked a
    tiling 32 % slower than at 1x. Twice the bandwidth must not cost cycles at decode."""
    base, fast = load_config("910b"), load_config("910b", ['hbm.bandwidth="3.2 TB/s"'])
    w = "bf16" if method == "native" else "int8"
    for m in (1, 16):
        c = [simulate(build_gemm(cfg, m, 4096, 4096, method=method, weights=w), cfg, numerics=False).cycles
             for cfg in (base, fast)]
        assert c[1] <= c[0], (m, c)


def test_msd_on_a_long_k_picks_row_tiles_whose_slots_fit_the_ub():
    """Regression (DeepSeek-V3 kv_a_proj at prefill): with K = 7168 the AIVs' per-piece row maxima of a
    128-row tile overflow the UB; the plan must fall back to shorter row tiles, not refuse the shape."""
    cfg = load_config("910b")
    res = simulate(build_gemm(cfg, 256, 7168, 576, method="msd", weights="int8"), cfg)
    assert res.numerics.exact and res.graph.meta["tiling"]["m0"] <= 64


def test_msd_at_decode_sizes_falls_back_from_one_row_tile_on_a_long_k():
    """Regression (full verify grid: 64 x {16384, 18432, 28672} were refused on 910b): MSD keeps M <= 64
    in one row tile, but with K = 16384 the per-piece row maxima of 64 rows overflow the UB; the fallback
    to shorter row tiles must drop the one-tile floor too."""
    cfg = load_config("910b")
    res = simulate(build_gemm(cfg, 64, 16384, 512, method="msd", weights="int8"), cfg)
    assert res.numerics.exact and res.graph.meta["tiling"]["m0"] == 32


@pytest.mark.parametrize("method", ["msd", "dequant"])
def test_cores_sharing_a_column_range_stay_exact(method):
    """950 with a 256 KiB L2: a 512x512x1024 int8 W (512 KiB) does not fit, so cores share column ranges
    (tiling.l2_share) and take the row tiles in turn; every output element is still bit-exact."""
    cfg = load_config("950", ['l2.capacity="256KiB"'])
    g = build_gemm(cfg, 512, 512, 1024, method=method, weights="int8", cores=8)
    assert g.meta["cores_per_column_range"] > 1
    res = simulate(g, cfg, seed=3)
    assert res.numerics.exact and res.numerics.mismatches == 0


def test_assign_tiles_shares_a_range_row_tile_by_row_tile():
    """Four cores, two per range: N = 512 in two ranges of 256, cut into sub-tiles of n0 = 128; core j
    of a range takes row tiles j, j + 2, ... and runs them all for a sub-tile before the next."""
    t = GemmTiling(m0=16, n0=128, k0=64, k1=256, l0c_slots=2, tiles_m=3, tiles_n=4, est_cycles=0)
    per_core = assign_tiles(48, 512, t, 4, "columns", share=2)
    rows = [(0, 16), (16, 32), (32, 48)]
    assert per_core == [
        [(rows[0], (0, 128)), (rows[2], (0, 128)), (rows[0], (128, 256)), (rows[2], (128, 256))],
        [(rows[1], (0, 128)), (rows[1], (128, 256))],
        [(rows[0], (256, 384)), (rows[2], (256, 384)), (rows[0], (384, 512)), (rows[2], (384, 512))],
        [(rows[1], (256, 384)), (rows[1], (384, 512))],
    ]
    # one core per range: as before, a range per core
    assert [len(ct) for ct in assign_tiles(48, 512, t, 4, "columns")] == [3, 3, 3, 3]


@pytest.mark.parametrize("l2, share", [("64MiB", 1), ("60MiB", 2), ("20MiB", 4), ("1MiB", 8)])
def test_l2_share_is_the_fewest_cores_per_range_whose_round_of_w_fits(l2, share):
    """int8 W of 4096 x 16384 (64 MiB) on 32 cores, A resident: one core per range reads all of W in a
    round; each doubling of the cores per range halves it, up to the row tiles there are (8)."""
    cfg = load_config("950", [f'l2.capacity="{l2}"'])
    t = GemmTiling(m0=64, n0=512, k0=64, k1=512, l0c_slots=2, tiles_m=8, tiles_n=32, est_cycles=0)
    assert l2_share(cfg, t, 512, 4096, 16384, 32, 1, 0) == share
    assert l2_share(load_config("950", [f'l2.capacity="{l2}"', "l2.enabled=false"]), t, 512, 4096, 16384, 32, 1, 0) == 1


@pytest.mark.parametrize("m, why", [(768, "3 row tiles of 256: a sharer would run 2 and the other 1"),
                                     (320, "row tiles of 192 and 128: the busiest sharer has 1.2x the rows")])
def test_l2_share_keeps_one_core_per_range_where_sharing_unbalances_the_cores(m, why):
    """950 with an 8 MiB L2, dequant (Cube-bound) on an 8 MiB int8 W: sharing would halve the W read from
    HBM but give one core of each range more rows than it has alone (simulated: 1.30x and 1.14x slower)."""
    cfg = load_config("950", ['l2.capacity="8MiB"'])
    assert quant.dequant_plan(cfg, m, 2048, 4096, 32, None).share == 1, why
    assert quant.msd_plan(cfg, 512, 4096, 8192, 32, 2).share == 8   # even rows, W-bound: shares


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 700), n=st.integers(1, 3000), m0=st.sampled_from([16, 48, 64]),
       n0=st.sampled_from([16, 128, 256]), ranges=st.integers(1, 12), share=st.sampled_from([1, 2, 4]))
def test_shared_column_ranges_cover_the_output_once(m, n, m0, n0, ranges, share):
    t = GemmTiling(m0=m0, n0=n0, k0=64, k1=256, l0c_slots=2, tiles_m=-(-m // m0), tiles_n=-(-n // n0),
                   est_cycles=0)
    seen = [(r, c) for ct in assign_tiles(m, n, t, ranges * share, "columns", share) for r, c in ct]
    assert len(seen) == len(set(seen))
    assert sum((r1 - r0) * (c1 - c0) for (r0, r1), (c0, c1) in seen) == m * n
