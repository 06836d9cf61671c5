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
from npusim.graph.ops import GmRef, Path, Role, Unit
from npusim.kernels.gemm.cube_loop import CubeLoop
from npusim.kernels.gemm.tiling import GemmTiling, choose_gemm_tiling, k_chunks, split

COPY = {"fn": "copy"}
TO_BF16 = {"fn": "copy", "cast": "bf16"}


def check_shape(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None) -> int:
    for name, v in (("M", m), ("K", k), ("N", n)):
        if v <= 0:
            raise GraphError(f"GEMM shape: {name} = {v} must be a positive integer")
    cores = cfg.chip.cores if cores is None else cores
    if not 1 <= cores <= cfg.chip.cores:
        raise GraphError(f"--cores {cores}: {cfg.meta.name} has {cfg.chip.cores} cores")
    return cores


def tiling_meta(t: GemmTiling) -> dict:
    return {"m0": t.m0, "n0": t.n0, "k0": t.k0, "k1": t.k1, "l0c_slots": t.l0c_slots}


def build_gemm_native(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None,
                      tiling: GemmTiling | None = None) -> KernelGraph:
    cores = check_shape(cfg, m, k, n, cores)
    t = tiling or choose_gemm_tiling(cfg, m, k, n, cores)
    g = KernelGraph(name=f"gemm_native_bf16_{m}x{k}x{n}")
    g.meta = {"kernel": "gemm", "method": "native", "weights": "bf16", "m": m, "k": k, "n": n,
              "cores": cores, "tiling": tiling_meta(t)}
    g.tensor("x", (m, k), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
    g.tensor("w", (k, n), "bf16", Role.WEIGHT, {"kind": "normal", "std": 1.0 / max(1.0, k) ** 0.5})
    g.tensor("y", (m, n), "bf16", Role.OUTPUT)
    g.reference = {"fn": "gemm_native_bf16", "inputs": ["x", "w"], "output": "y", "truth": "gemm_fp64"}

    tiles = [(r, c) for r in split(m, t.m0) for c in split(n, t.n0)]
    k1_chunks = k_chunks(k, t.k1, t.k0)
    for core in range(min(cores, len(tiles))):
        aic = Unit(core, "aic")
        loop = CubeLoop(g, aic, t, a_rows=t.m0, a_dtype="bf16", b_dtype="bf16")
        for (r0, r1), (c0, c1) in tiles[core::cores]:
            mt, nt = r1 - r0, c1 - c0
            acc = loop.next_acc()
            mm = -1
            for j, (ka, kb) in enumerate(k1_chunks):
                kt = kb - ka
                sa, sb = loop.next_l1()
                la = loop.load_l1(f"ld_x[{r0}:{r1},{ka}:{kb}]", sa, GmRef("x", ((r0, r1), (ka, kb))),
                                  mt * kt * 2, Role.ACTIVATION, COPY)
                lb = loop.load_l1(f"ld_w[{ka}:{kb},{c0}:{c1}]", sb, GmRef("w", ((ka, kb), (c0, c1))),
                                  kt * nt * 2, Role.WEIGHT, COPY)
                mm = loop.chunk(f"[{r0},{c0},{ka}]", sa, la, sb, lb, mt, kt, nt, acc, j == 0, "bf16")
            fix = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", aic, Path.L0C_TO_GM, mt * nt * 2, Role.OUTPUT,
                        gm=GmRef("y", ((r0, r1), (c0, c1))), src=acc, deps=[mm], compute=TO_BF16)
            loop.readers[acc] = [fix]
    return g
