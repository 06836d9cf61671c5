"""GEMM with MXFP4 weights on the simulator: dequant, MSD (MXFP4 passes) and direct (MXFP8 activations)."""

import pytest

import npusim.kernels.gemm.compute_mx  # noqa: F401  (registers the MX compute functions and references)
from npusim.errors import GraphError
from npusim.kernels.gemm.mx_schedules import build_gemm_mx
from npusim.kernels.gemm.tiling import GemmTiling
from npusim.numerics.packing import packed_nbytes
from npusim.sim.run import simulate


def _without_direct_paths(cfg):
    """The 950 preset with no UB->L1 and no L0C->UB: every hand-off goes through a GM workspace."""
    return cfg.model_copy(update={"dma": cfg.dma.model_copy(update={"ub_to_l1": None, "l0c_to_ub": None})})


def _with_small_l1(cfg):
    """The 950 preset with a 64 KiB L1: the MSD passes no longer stay resident and are re-read per chunk."""
    return cfg.model_copy(update={"buffers": cfg.buffers.model_copy(update={"l1_bytes": 64 * 1024})})


# M not a multiple of 16 and M = 1; K a multiple of 32 but not of the K tiles; N odd-ish; few cores.
SHAPES = [(1, 160, 40, 2), (17, 1056, 72, 3), (37, 2080, 100, 3)]


@pytest.mark.parametrize("method,passes", [("dequant", 2), ("msd", 2), ("direct", 1)])
@pytest.mark.parametrize("m,k,n,cores", SHAPES)
def test_exact_numerics_950(cfg950, method, passes, m, k, n, cores):
    g = build_gemm_mx(cfg950, m, k, n, cores, method, passes)
    res = simulate(g, cfg950, seed=3)
    assert res.numerics.exact and res.numerics.mismatches == 0, res.numerics
    assert res.numerics.elements == m * n
    assert 0 < res.numerics.rel_l2_vs_fp64 < 5e-2


@pytest.mark.parametrize("variant", [_without_direct_paths, _with_small_l1])
@pytest.mark.parametrize("method,passes", [("msd", 2), ("msd", 3), ("direct", 1)])
def test_exact_numerics_through_workspaces(cfg950, variant, method, passes):
    cfg = variant(cfg950)
    g = build_gemm_mx(cfg, 37, 1056, 70, 3, method, passes)
    assert g.meta["handoff"] == "gm_workspace"
    res = simulate(g, cfg, seed=5)
    assert res.numerics.exact and res.numerics.mismatches == 0, res.numerics


@pytest.mark.parametrize("m,k,n,cores", [(1, 160, 40, 2), (17, 1056, 72, 3)])
def test_exact_numerics_dequant_910b(cfg910, m, k, n, cores):
    g = build_gemm_mx(cfg910, m, k, n, cores, "dequant")
    assert g.meta["handoff"] == "gm_workspace"
    res = simulate(g, cfg910, seed=3)
    assert res.numerics.exact and res.numerics.mismatches == 0, res.numerics


def _cube_busy(res) -> int:
    return sum(r.end - r.start for r in res.records.ops if r.pipe == "CUBE")


def test_two_mxfp4_passes_cost_the_cube_one_mxfp8_pass(cfg950):
    # Same tiling for both: every mmad pays a start cost per instruction, so the Cube's busy time depends
    # on how many mmads the tiling issues as well as on the fractal steps. With equal m0/n0/k0/k1 both
    # methods issue the same mmads (MSD's carry 2 x M rows at k0 = 64, direct's M rows at k0 = 32, the same
    # fractal steps), so the comparison isolates the fp4 rate (2 x fp8); with tilings chosen separately it
    # would also compare two tilings.
    t = GemmTiling(m0=16, n0=128, k0=128, k1=512, l0c_slots=2, tiles_m=1, tiles_n=32, est_cycles=0)
    msd = simulate(build_gemm_mx(cfg950, 16, 4096, 4096, None, "msd", 2, tiling=t), cfg950, numerics=False)
    direct = simulate(build_gemm_mx(cfg950, 16, 4096, 4096, None, "direct", tiling=t), cfg950, numerics=False)
    b_msd, b_direct = _cube_busy(msd), _cube_busy(direct)
    assert b_direct > 0
    assert abs(b_msd - b_direct) <= 0.01 * b_direct, (b_msd, b_direct)
    mmads = [r for r in msd.records.ops if r.pipe == "CUBE"]
    assert {r.dtype for r in mmads} == {"mxfp4"}
    assert {r.dtype for r in direct.records.ops if r.pipe == "CUBE"} == {"mxfp8"}


@pytest.mark.parametrize("method", ["msd", "direct"])
def test_mx_cube_methods_refused_on_910b(cfg910, method):
    with pytest.raises(GraphError, match="950"):
        build_gemm_mx(cfg910, 16, 1024, 1024, None, method)


@pytest.mark.parametrize("method", ["dequant", "msd", "direct"])
def test_k_not_a_multiple_of_the_mx_block_is_refused(cfg950, method):
    with pytest.raises(GraphError, match="multiple of the MX block"):
        build_gemm_mx(cfg950, 16, 1000, 256, None, method)


@pytest.mark.parametrize("preset,method", [("950", "dequant"), ("950", "msd"), ("950", "direct"),
                                           ("910b", "dequant")])
def test_weight_bytes_are_the_packed_mxfp4_size(cfg950, cfg910, preset, method):
    cfg = cfg950 if preset == "950" else cfg910
    m, k, n = 16, 2048, 1024
    res = simulate(build_gemm_mx(cfg, m, k, n, None, method), cfg, numerics=False)
    read = {"weight": 0, "weight_scale": 0}
    for r in res.records.ops:
        if r.kind == "dma" and r.path.startswith("gm_") and r.role in read:
            read[r.role] += r.nbytes
    assert read["weight"] == k * n // 2
    assert read["weight_scale"] == (k // 32) * n
    assert read["weight"] + read["weight_scale"] == packed_nbytes("mxfp4", k, n)
