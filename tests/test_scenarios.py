"""Tiny hand-built graphs with exact start/end cycles, worked out by hand from configs/910b.toml:
MTE1 start 26 cycles, L1->L0A 512 B/cycle; mmad start 8 + one cycle per fractal step; vector start 16 +
one repeat (256 B) per cycle for `add`; intra-core flag 8 cycles, cross-core flag 200; MTE2 start 100,
GM->L1 port 128 B/cycle, HBM first byte 400 cycles, L2 read 110 B/cycle/core."""

import pytest

from npusim.errors import DeadlockError, GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Buffer, GmRef, Path, Role, Unit
from npusim.hw.records import Recorder
from npusim.sim.run import simulate

AIC0, AIV0, AIC1 = Unit(0, "aic"), Unit(0, "aiv0"), Unit(1, "aic")


def times(res):
    return {r.name: (r.start, r.end) for r in res.records.ops}


def test_two_pipes_with_a_dependency(cfg910):
    g = KernelGraph("two_pipes")
    g.slot("a1", AIC0, Buffer.L1, 16384)
    g.slot("a0", AIC0, Buffer.L0A, 16384)
    g.slot("b0", AIC0, Buffer.L0B, 16384)
    g.slot("c", AIC0, Buffer.L0C, 65536)
    ld = g.dma("l0a", AIC0, Path.L1_TO_L0A, 16384, Role.ACTIVATION, src="a1", dst="a0")
    g.mmad("mm", AIC0, 128, 64, 128, "bf16", reads=["a0", "b0"], writes=["c"], deps=[ld])
    res = simulate(g, cfg910, numerics=False)
    # MTE1: 26 + 16384/512 = 58.  CUBE: ready 58 + 8 (flag), 8 + 8*4*8 = 264 cycles.
    assert times(res) == {"l0a": (0, 58), "mm": (66, 330)}
    assert res.cycles == 330
    mm = [r for r in res.records.ops if r.name == "mm"][0]
    assert (mm.ready, mm.blocker, mm.latency) == (66, 0, 8)


class KernelGraphs:
    @staticmethod
    def double_buffer() -> KernelGraph:
        g = KernelGraph("double_buffer")
        for s in ("a1", "a0_0", "a0_1"):
            g.slot(s, AIC0, Buffer.L1 if s == "a1" else Buffer.L0A, 16384)
        g.slot("c", AIC0, Buffer.L0C, 65536)
        g.slot("b0", AIC0, Buffer.L0B, 16384)
        last_reader = {0: [], 1: []}
        for i in range(4):
            s = i % 2
            ld = g.dma(f"ld{i}", AIC0, Path.L1_TO_L0A, 16384, Role.ACTIVATION, src="a1", dst=f"a0_{s}",
                       slot_deps=last_reader[s])
            mm = g.mmad(f"mm{i}", AIC0, 128, 64, 128, "bf16", reads=[f"a0_{s}", "b0"], writes=["c"], deps=[ld])
            last_reader[s] = [mm]
        return g


def test_double_buffered_pipeline(cfg910):
    g = KernelGraphs.double_buffer()
    res = simulate(g, cfg910, numerics=False)
    assert times(res) == {
        "ld0": (0, 58), "mm0": (66, 330),
        "ld1": (58, 116), "mm1": (330, 594),       # loads run ahead into the second slot
        "ld2": (338, 396), "mm2": (594, 858),      # slot 0 is free when mm0 ends (+8 flag)
        "ld3": (602, 660), "mm3": (858, 1122),
    }
    ld2 = [r for r in res.records.ops if r.name == "ld2"][0]
    assert ld2.blocker_is_slot and ld2.blocker == 1


def test_cross_core_flags(cfg910):
    g = KernelGraph("cross_core")
    g.slot("u", AIV0, Buffer.UB, 4096)
    for s, b in (("a0", Buffer.L0A), ("b0", Buffer.L0B), ("c", Buffer.L0C)):
        g.slot(s, AIC0, b, 4096)
        g.slot(s + "1", AIC1, b, 4096)
    v = g.vec("vadd", AIV0, "add", 128, "bf16", reads=["u"], writes=["u"])
    m0 = g.mmad("mm_aic0", AIC0, 16, 16, 16, "bf16", reads=["a0", "b0"], writes=["c"], deps=[v])
    g.mmad("mm_aic1", AIC1, 16, 16, 16, "bf16", reads=["a01", "b01"], writes=["c1"], deps=[m0])
    res = simulate(g, cfg910, numerics=False)
    # vector: 16 + 1 repeat = 17. AIV -> AIC: +200. mmad 16x16x16: 8 + 1 = 9. core 0 -> core 1: +200.
    assert times(res) == {"vadd": (0, 17), "mm_aic0": (217, 226), "mm_aic1": (426, 435)}


def test_hbm_miss_then_l2_hit(cfg910):
    g = KernelGraph("l2_hit")
    g.tensor("x", (64, 64), "bf16", Role.ACTIVATION)
    g.slot("a", AIC0, Buffer.L1, 8192)
    g.slot("b", AIC0, Buffer.L1, 8192)
    ref = GmRef("x", ((0, 64), (0, 64)))
    first = g.dma("miss", AIC0, Path.GM_TO_L1, 8192, Role.ACTIVATION, gm=ref, dst="a")
    g.dma("hit", AIC0, Path.GM_TO_L1, 8192, Role.ACTIVATION, gm=ref, dst="b", deps=[first])
    res = simulate(g, cfg910, numerics=False)
    # miss: 100 start + 400 first byte + 8192/128 = 564.  hit: 100 + ceil(8192/110) = 175, after 564.
    assert times(res) == {"miss": (0, 564), "hit": (564, 739)}
    assert [r.level for r in res.records.ops] == ["hbm", "l2"]


def test_program_order_deadlock_names_the_stuck_ops(cfg910):
    g = KernelGraph("stuck")
    for s, b in (("a0", Buffer.L0A), ("b0", Buffer.L0B), ("c", Buffer.L0C), ("a1", Buffer.L1)):
        g.slot(s, AIC0, b, 4096)
    # MTE1 runs "ld_a" first, but it waits on the mmad, which waits on "ld_b", queued behind "ld_a".
    g.dma("ld_a", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0", deps=[2])
    g.dma("ld_b", AIC0, Path.L1_TO_L0B, 512, Role.WEIGHT, src="a1", dst="b0")
    g.mmad("mm", AIC0, 16, 16, 16, "bf16", reads=["a0", "b0"], writes=["c"], deps=[1])
    with pytest.raises(DeadlockError) as e:
        simulate(g, cfg910, numerics=False)
    msg = str(e.value)
    assert "cannot finish" in msg and "'ld_a' waits on op 2 'mm'" in msg and "'mm' waits on op 1 'ld_b'" in msg


def test_dependency_cycle_is_named(cfg910):
    g = KernelGraph("cyclic")
    g.slot("a1", AIC0, Buffer.L1, 4096)
    g.slot("a0", AIC0, Buffer.L0A, 4096)
    g.dma("x", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0", deps=[1])
    g.dma("y", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0", deps=[0])
    with pytest.raises(GraphError, match="dependency cycle: x -> y -> x|dependency cycle: y -> x -> y"):
        simulate(g, cfg910, numerics=False)


def test_tile_larger_than_l0a_is_refused_with_bytes(cfg910):
    g = KernelGraph("too_big")
    g.slot("a1", AIC0, Buffer.L1, 4096)
    g.slot("a0", AIC0, Buffer.L0A, 96 * 1024)
    g.dma("x", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0")
    with pytest.raises(GraphError, match=r"L0A of core0\.aic: live tiles need 98304 B but the buffer holds 65536 B"):
        simulate(g, cfg910, numerics=False)


def test_absent_path_is_refused(cfg910):
    g = KernelGraph("direct")
    g.slot("u", AIV0, Buffer.UB, 4096)
    g.slot("l1", AIC0, Buffer.L1, 4096)
    g.dma("ub2l1", AIV0, Path.UB_TO_L1, 512, Role.WORKSPACE, src="u", dst="l1")
    with pytest.raises(GraphError, match="path ub_to_l1 does not exist on preset 910b"):
        simulate(g, cfg910, numerics=False)


def test_recorder_receives_one_record_per_op(cfg910):
    g = KernelGraph("rec")
    g.slot("a1", AIC0, Buffer.L1, 4096)
    g.slot("a0", AIC0, Buffer.L0A, 4096)
    for i in range(5):
        g.dma(f"x{i}", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0")
    rec = Recorder()
    res = simulate(g, cfg910, numerics=False, recorder=rec)
    assert res.records is rec and sorted(r.index for r in rec.ops) == list(range(5))
    # back to back on one pipe: 26 + 1 cycles each
    assert [(r.start, r.end) for r in rec.ops] == [(27 * i, 27 * i + 27) for i in range(5)]


def _two_tile_gemm(with_war_dep: bool) -> KernelGraph:
    """Y (32x16) = X (32x16) @ W (16x16) in two row tiles that share one L1 slot for X. The MTE1 load
    of tile 0 is held back by a long AIV op, so without the write-after-read wait, X tile 1 lands in
    the slot before tile 0 was read out of it."""
    g = KernelGraph("two_tiles" + ("" if with_war_dep else "_broken"))
    g.tensor("x", (32, 16), "bf16", Role.ACTIVATION, {"kind": "normal"})
    g.tensor("w", (16, 16), "bf16", Role.WEIGHT, {"kind": "normal"})
    g.tensor("y", (32, 16), "bf16", Role.OUTPUT)
    g.reference = {"fn": "gemm_native_bf16", "inputs": ["x", "w"], "output": "y"}
    g.slot("a1", AIC0, Buffer.L1, 512)
    g.slot("b1", AIC0, Buffer.L1, 512)
    g.slot("b0", AIC0, Buffer.L0B, 512)
    for i in range(2):
        g.slot(f"a0_{i}", AIC0, Buffer.L0A, 512)
        g.slot(f"c{i}", AIC0, Buffer.L0C, 1024)
    copy = {"fn": "copy"}
    slow = g.vec("slow", AIV0, "exp", 1 << 20, "bf16")                                          # 0
    ld_x0 = g.dma("ld_x0", AIC0, Path.GM_TO_L1, 512, Role.ACTIVATION, gm=GmRef("x", ((0, 16), (0, 16))),
                  dst="a1", compute=copy)                                                      # 1
    ld_w = g.dma("ld_w", AIC0, Path.GM_TO_L1, 512, Role.WEIGHT, gm=GmRef("w", ((0, 16), (0, 16))),
                 dst="b1", compute=copy)                                                       # 2
    ld_x1 = g.dma("ld_x1", AIC0, Path.GM_TO_L1, 512, Role.ACTIVATION, gm=GmRef("x", ((16, 32), (0, 16))),
                  dst="a1", slot_deps=[5] if with_war_dep else [], compute=copy)               # 3
    l0b = g.dma("l0b", AIC0, Path.L1_TO_L0B, 512, Role.WEIGHT, src="b1", dst="b0", deps=[ld_w], compute=copy)
    l0a0 = g.dma("l0a0", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0_0", deps=[ld_x0, slow],
                 compute=copy)                                                                 # 5
    l0a1 = g.dma("l0a1", AIC0, Path.L1_TO_L0A, 512, Role.ACTIVATION, src="a1", dst="a0_1", deps=[ld_x1],
                 compute=copy)
    for i, l0a in enumerate((l0a0, l0a1)):
        mm = g.mmad(f"mm{i}", AIC0, 16, 16, 16, "bf16", reads=[f"a0_{i}", "b0"], writes=[f"c{i}"],
                    deps=[l0a, l0b], compute={"fn": "mmad", "init": True})
        g.dma(f"st{i}", AIC0, Path.L0C_TO_GM, 512, Role.OUTPUT, gm=GmRef("y", ((16 * i, 16 * i + 16), (0, 16))),
              src=f"c{i}", deps=[mm], compute={"fn": "copy", "cast": "bf16"})
    assert g.ops[5].name == "l0a0"
    return g


def test_numbers_travel_with_the_schedule(cfg910):
    """A correct schedule reproduces the reference bit for bit; the same schedule without one
    write-after-read wait reads an overwritten tile and produces wrong numbers."""
    good = simulate(_two_tile_gemm(True), cfg910, seed=5)
    assert good.numerics.exact
    bad = simulate(_two_tile_gemm(False), cfg910, seed=5)
    # every wrong element is in the first tile (256 elements); one may coincide by chance
    assert not bad.numerics.exact and 240 <= bad.numerics.mismatches <= 256
    # and the timing shows why: in the broken run, tile 1 landed before tile 0 was read
    t = times(bad)
    assert t["ld_x1"][1] < t["l0a0"][0]


def test_critical_path_and_idle_causes_of_the_double_buffer(cfg910):
    from npusim.report.attribution import Attribution
    res = simulate(KernelGraphs.double_buffer(), cfg910, numerics=False)
    a = Attribution(cfg910, res.records.ops)
    # mm3 <- mm2 <- mm1 <- mm0 (pipe order) <- flag 8 <- ld0 (0..58)
    assert a.critical_path() == {"aic.cube": 4 * 264, "aic.mte1:activation": 58, "flag": 8}
    assert sum(a.critical_path().values()) == res.cycles
    w = a.waiting_on()
    assert w["cube"] == {"aic.mte1:activation": 58, "flag": 8}
    # ld2 idles [116, 338): the Cube reading slot 0 until 330, then 8 cycles of flag on the slot edge;
    # ld3 idles [396, 602) likewise behind mm1.
    assert w["mte1"] == {"aic.cube": (330 - 116) + (594 - 396), "buffer": 16}


def test_bad_dependency_indices_are_named_once_each_in_op_order(cfg910):
    from npusim.kernels.gemm.quant import build_gemm

    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
    n = len(g.ops)
    g.ops[5] = g.ops[5]._replace(deps=(-1, n + 3))
    g.ops[7] = g.ops[7]._replace(deps=(7,))
    with pytest.raises(GraphError) as err:
        simulate(g, cfg910, numerics=False)
    lines = str(err.value).splitlines()[1:]
    assert [line.split("': ", 1)[1] for line in lines] == [
        f"depends on op -1, which does not exist (graph has {n} ops)",
        f"depends on op {n + 3}, which does not exist (graph has {n} ops)",
        "depends on itself"]
    assert lines[0].strip().startswith("op 5 ") and lines[2].strip().startswith("op 7 ")
