"""bf16 GEMM schedule: Y (M x N, bf16) = X (M x K, bf16) @ W (K x N, bf16), fp32 accumulation in L0C.

Per AI core (AIC only): for each output tile assigned to it, stream K in L1 chunks (MTE2, double-
buffered), feed the Cube in L0 steps (MTE1, double-buffered L0A/L0B), accumulate in an L0C slot, and
drain the tile through FixPipe with the fp32 -> bf16 cast. Output tiles are dealt to cores round-robin
in row-major order, so cores working at the same time share rows of X and read W columns that other
cores have just pulled into L2.
"""

from __future__ import annotations

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Buffer, GmRef, Path, Role, Unit
from npusim.kernels.gemm.tiling import GemmTiling, choose_gemm_tiling, split

_COPY = {"fn": "copy"}
_MMAD_INIT = {"fn": "mmad", "init": True}
_MMAD_ACC = {"fn": "mmad", "init": False}
_TO_BF16 = {"fn": "copy", "cast": "bf16"}


def check_shape(m: int, k: int, n: int) -> None:
    for name, v in (("M", m), ("K", k), ("N", n)):
        if v <= 0:
            raise GraphError(f"GEMM shape: {name} = {v} must be a positive integer")


def build_gemm_native(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None,
                      tiling: GemmTiling | None = None) -> KernelGraph:
    check_shape(m, k, n)
    cores = cfg.chip.cores if cores is None else cores
    if not 1 <= cores <= cfg.chip.cores:
        raise GraphError(f"--cores {cores}: {cfg.meta.name} has {cfg.chip.cores} cores")
    t = tiling or choose_gemm_tiling(cfg, m, k, n, cores)
    g = KernelGraph(name=f"gemm_native_bf16_{m}x{k}x{n}")
    g.meta = {"kernel": "gemm", "method": "native", "weights": "bf16", "m": m, "k": k, "n": n,
              "cores": cores, "tiling": {"m0": t.m0, "n0": t.n0, "k0": t.k0, "k1": t.k1,
                                         "l0c_slots": t.l0c_slots}}
    g.tensor("x", (m, k), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
    g.tensor("w", (k, n), "bf16", Role.WEIGHT, {"kind": "normal", "std": 1.0 / max(1.0, k) ** 0.5})
    g.tensor("y", (m, n), "bf16", Role.OUTPUT)
    g.reference = {"fn": "gemm_native_bf16", "inputs": ["x", "w"], "output": "y", "truth": "gemm_fp64"}

    tiles = [(r, c) for r in split(m, t.m0) for c in split(n, t.n0)]
    k1_chunks = split(k, t.k1)
    for core in range(min(cores, len(tiles))):
        _core_schedule(g, Unit(core, "aic"), tiles[core::cores], k1_chunks, t)
    return g


def _core_schedule(g: KernelGraph, aic: Unit, tiles, k1_chunks, t: GemmTiling) -> None:
    c = aic.core
    a1 = [g.slot(f"c{c}.l1.a{i}", aic, Buffer.L1, t.m0 * t.k1 * 2) for i in range(2)]
    b1 = [g.slot(f"c{c}.l1.b{i}", aic, Buffer.L1, t.k1 * t.n0 * 2) for i in range(2)]
    a0 = [g.slot(f"c{c}.l0a.{i}", aic, Buffer.L0A, t.m0 * t.k0 * 2) for i in range(2)]
    b0 = [g.slot(f"c{c}.l0b.{i}", aic, Buffer.L0B, t.k0 * t.n0 * 2) for i in range(2)]
    acc = [g.slot(f"c{c}.l0c.{i}", aic, Buffer.L0C, t.m0 * t.n0 * 4) for i in range(t.l0c_slots)]
    # Last ops that read each slot: a writer of the slot must wait for them (write-after-read).
    readers: dict[str, list[int]] = {s: [] for s in (*a1, *b1, *a0, *b0, *acc)}
    l1_step = l0_step = 0
    for ti, ((r0, r1), (c0, c1)) in enumerate(tiles):
        mt, nt = r1 - r0, c1 - c0
        acc_slot = acc[ti % t.l0c_slots]
        last_mmad = -1
        first = True
        for ka, kb in k1_chunks:
            kt = kb - ka
            sa, sb = a1[l1_step % 2], b1[l1_step % 2]
            l1_step += 1
            la = g.dma(f"ld_x[{r0}:{r1},{ka}:{kb}]", aic, Path.GM_TO_L1, mt * kt * 2, Role.ACTIVATION,
                       gm=GmRef("x", ((r0, r1), (ka, kb))), dst=sa, slot_deps=readers[sa], compute=_COPY)
            lb = g.dma(f"ld_w[{ka}:{kb},{c0}:{c1}]", aic, Path.GM_TO_L1, kt * nt * 2, Role.WEIGHT,
                       gm=GmRef("w", ((ka, kb), (c0, c1))), dst=sb, slot_deps=readers[sb], compute=_COPY)
            readers[sa], readers[sb] = [], []
            for qa, qb in split(kt, t.k0):
                qt = qb - qa
                s0a, s0b = a0[l0_step % 2], b0[l0_step % 2]
                l0_step += 1
                ma = g.dma(f"l0a[{r0},{ka + qa}]", aic, Path.L1_TO_L0A, mt * qt * 2, Role.ACTIVATION,
                           src=sa, dst=s0a, deps=[la], slot_deps=readers[s0a],
                           compute={"fn": "copy", "sub": ((0, mt), (qa, qb))})
                mb = g.dma(f"l0b[{ka + qa},{c0}]", aic, Path.L1_TO_L0B, qt * nt * 2, Role.WEIGHT,
                           src=sb, dst=s0b, deps=[lb], slot_deps=readers[s0b],
                           compute={"fn": "copy", "sub": ((qa, qb), (0, nt))})
                readers[sa].append(ma)
                readers[sb].append(mb)
                last_mmad = g.mmad(f"mmad[{r0},{c0},{ka + qa}]", aic, mt, qt, nt, "bf16",
                                   reads=[s0a, s0b] if first else [s0a, s0b, acc_slot], writes=[acc_slot], deps=[ma, mb],
                                   slot_deps=readers[acc_slot] if first else (),
                                   compute=_MMAD_INIT if first else _MMAD_ACC)
                readers[s0a], readers[s0b] = [last_mmad], [last_mmad]
                first = False
        fix = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", aic, Path.L0C_TO_GM, mt * nt * 2, Role.OUTPUT,
                    gm=GmRef("y", ((r0, r1), (c0, c1))), src=acc_slot, deps=[last_mmad], compute=_TO_BF16)
        readers[acc_slot] = [fix]
