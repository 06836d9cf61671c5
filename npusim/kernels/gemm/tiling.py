"""GEMM tiling chosen from buffer capacities and the cost model.

The output is cut into m0 x n0 tiles (one L0C accumulator each), K into L1 chunks of k1 and L0 steps of
k0. Operand slots are double-buffered in L1, L0A and L0B; L0C holds two accumulators when they fit
(FixPipe drains one while the Cube fills the other), else one. Among the tilings that fit, the one with
the lowest estimated per-core time (slowest pipe x rounds of tiles over cores) wins; ties go to fewer
GM bytes. The estimate uses the same cost functions as the simulator (npusim.hw.costs).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.ops import DTYPE_BYTES, Path
from npusim.hw import costs

M0_CHOICES = (16, 32, 48, 64, 96, 128, 192, 256)
K0_CHOICES = (32, 64, 128)
K1_FACTORS = (1, 2, 4)


@dataclass(frozen=True)
class GemmTiling:
    m0: int
    n0: int
    k0: int
    k1: int
    l0c_slots: int
    tiles_m: int
    tiles_n: int
    est_cycles: int

    @property
    def tiles(self) -> int:
        return self.tiles_m * self.tiles_n


def _round16(x: int) -> int:
    return max(16, ceil(x / 16) * 16)


def choose_gemm_tiling(cfg: HardwareConfig, m: int, k: int, n: int, cores: int, *,
                       a_dtype: str = "bf16", b_dtype: str = "bf16", acc_bytes: int = 4,
                       out_dtype: str = "bf16") -> GemmTiling:
    ab, bb, ob = DTYPE_BYTES[a_dtype], DTYPE_BYTES[b_dtype], DTYPE_BYTES[out_dtype]
    buf = cfg.buffers
    gm_rate = costs.port(cfg, Path.GM_TO_L1).rate_bytes_per_cycle
    # Steady state: operands re-read by other cores hit in L2; with L2 off, every core shares HBM.
    if cfg.l2.enabled:
        gm_rate = min(gm_rate, cfg.l2.read_rate_bytes_per_cycle)
    else:
        gm_rate = min(gm_rate, cfg.hbm_bytes_per_cycle / cores)
    mte2_start = costs.port(cfg, Path.GM_TO_L1).start_cycles
    best: tuple | None = None
    m_cap = _round16(m)
    n_cap = _round16(n)
    for m0 in (c for c in M0_CHOICES if c <= m_cap) if m_cap >= 16 else ():
        for n0 in range(16, min(512, n_cap) + 1, 16):
            for k0 in K0_CHOICES:
                if 2 * m0 * k0 * ab > buf.l0a_bytes or 2 * k0 * n0 * bb > buf.l0b_bytes:
                    continue
                acc_tile = m0 * n0 * acc_bytes
                l0c_slots = 2 if 2 * acc_tile <= buf.l0c_bytes else 1 if acc_tile <= buf.l0c_bytes else 0
                if not l0c_slots:
                    continue
                for f in K1_FACTORS:
                    k1 = k0 * f
                    if 2 * (m0 * k1 * ab + k1 * n0 * bb) > buf.l1_bytes:
                        continue
                    if k1 > _round16(k) * 2 and f > 1:
                        continue
                    mt, nt = min(m0, m), min(n0, n)
                    k_steps = ceil(k / k0)
                    cube = k_steps * costs.mmad_cycles(cfg, mt, k0, nt, b_dtype)
                    mte1 = k_steps * (costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, ceil(mt * k0 * ab))
                                      + costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, ceil(k0 * nt * bb)))
                    mte2 = ceil(k / k1) * (2 * mte2_start + ceil((mt + nt) * k1 * ab / gm_rate))
                    fixp = costs.dma_cycles_uncontended(cfg, Path.L0C_TO_GM, ceil(mt * nt * ob))
                    tile = max(cube, mte1, mte2) + (0 if l0c_slots == 2 else fixp)
                    tiles_m, tiles_n = ceil(m / m0), ceil(n / n0)
                    rounds = ceil(tiles_m * tiles_n / cores)
                    est = rounds * tile + fixp
                    gm_bytes = tiles_m * tiles_n * (mt + nt) * k
                    score = (est, gm_bytes, -m0 * n0)
                    if best is None or score < best[0]:
                        best = (score, GemmTiling(m0, n0, k0, k1, l0c_slots, tiles_m, tiles_n, est))
    if best is None:
        raise GraphError(f"no GEMM tiling of {m}x{k}x{n} fits the buffers of {cfg.meta.name} "
                         f"(L0A {buf.l0a_bytes} B, L0B {buf.l0b_bytes} B, L0C {buf.l0c_bytes} B, L1 {buf.l1_bytes} B)")
    return best[1]


def split(total: int, step: int) -> list[tuple[int, int]]:
    """[0, total) cut into [start, stop) pieces of `step` (the last one shorter)."""
    return [(s, min(s + step, total)) for s in range(0, total, step)]
