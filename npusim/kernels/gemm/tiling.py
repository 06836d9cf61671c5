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
from typing import Callable

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.ops import DTYPE_BYTES, Path
from npusim.hw import costs

M0_CHOICES = (16, 32, 48, 64, 96, 128, 192, 256)
K0_CHOICES = (32, 64, 128)
K1_FACTORS = (1, 2, 4, 8)


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
                       out_dtype: str = "bf16", a_row_factor: int = 1,
                       max_b_chunk_elements: int | None = None, max_acc_elements: int | None = None,
                       k1_multiple: int = 1, partition: str = "round_robin",
                       a_resident_bytes: int = 0, b_buffers: int = 2, max_n0: int | None = None,
                       b_producer: Callable[[int, int], float] | None = None, min_m0: int = 0,
                       max_m0: int | None = None) -> GemmTiling:
    """a_row_factor: A rows per output row (MSD stacks `passes` rows per token). The max_* limits come
    from the AIV side of a schedule (a weight chunk or an accumulator tile must fit in UB; max_n0 when the
    AIVs produce a chunk in pieces along K, each piece n0 columns wide).
    partition: how output tiles are dealt to cores ("round_robin" or "columns", see assign_tiles).
    a_resident_bytes: L1 bytes of an A operand kept whole in L1 (then A is not double-buffered by chunk).
    b_producer: B is a workspace other units (the AIVs of the dequant schedule) write piece by piece just
    before the AIC reads it: B then comes from L2 (with L2 on) however many row tiles there are, a core
    takes at least b_producer(n0, k1) cycles (the producers' time for its columns), and after the last
    piece lands the AIC still reads one whole chunk and feeds it to the Cube (a drain that grows with k1).
    min_m0, max_m0: the row tiles to consider (a schedule that must keep all rows in one tile, or whose
    AIV-side slots grow with the rows)."""
    ab, bb, ob = DTYPE_BYTES[a_dtype], DTYPE_BYTES[b_dtype], DTYPE_BYTES[out_dtype]
    buf = cfg.buffers
    port_rate = costs.port(cfg, Path.GM_TO_L1).rate_bytes_per_cycle
    hbm_share = cfg.hbm_bytes_per_cycle / cores
    # Steady state: A is re-read by many cores and hits in L2 (with L2 on); B comes from HBM when there is
    # one row tile (each weight byte is read once), else mostly from L2.
    a_rate = min(port_rate, cfg.l2.read_rate_bytes_per_cycle if cfg.l2.enabled else hbm_share)
    mte2_start = costs.port(cfg, Path.GM_TO_L1).start_cycles
    best: tuple | None = None
    m_cap = _round16(m)
    n_cap = _round16(n)
    n0_cap = min(512, n_cap, max_n0 or 512)
    for m0 in (c for c in M0_CHOICES if min_m0 <= c <= min(m_cap, max_m0 or m_cap)) if m_cap >= 16 else ():
        for n0 in range(16, n0_cap + 1, 16):
            if max_acc_elements is not None and a_row_factor * m0 * n0 > max_acc_elements:
                continue
            for k0 in K0_CHOICES:
                if 2 * a_row_factor * m0 * k0 * ab > buf.l0a_bytes or 2 * k0 * n0 * bb > buf.l0b_bytes:
                    continue
                acc_tile = a_row_factor * m0 * n0 * acc_bytes
                l0c_slots = 2 if 2 * acc_tile <= buf.l0c_bytes else 1 if acc_tile <= buf.l0c_bytes else 0
                if not l0c_slots:
                    continue
                for f in K1_FACTORS:
                    k1 = k0 * f
                    a_l1 = a_resident_bytes if a_resident_bytes else 2 * a_row_factor * m0 * k1 * ab
                    if a_l1 + b_buffers * k1 * n0 * bb > buf.l1_bytes:
                        continue
                    if k1 % k1_multiple or (max_b_chunk_elements is not None and k1 * n0 > max_b_chunk_elements):
                        continue
                    if k1 > _round16(k) * 2 and f > 1:
                        continue
                    mt, nt = a_row_factor * min(m0, m), min(n0, n)
                    k_steps = ceil(k / k0)
                    cube = k_steps * costs.mmad_cycles(cfg, mt, k0, nt, b_dtype)
                    mte1 = k_steps * (costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, ceil(mt * k0 * ab))
                                      + costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, ceil(k0 * nt * bb)))
                    # B from HBM when each weight byte is read once (one row tile) or L2 is off, else
                    # mostly from L2; a B the AIVs wrote just before (b_producer) is read from L2
                    b_from_hbm = not cfg.l2.enabled or (ceil(m / m0) == 1 and b_producer is None)
                    b_rate = min(port_rate, hbm_share) if b_from_hbm else a_rate
                    b_fixed = mte2_start + (cfg.hbm.first_byte_cycles if b_from_hbm else 0)
                    a_cost = 0 if a_resident_bytes else mte2_start + ceil(mt * k1 * ab / a_rate)
                    mte2 = ceil(k / k1) * (b_fixed + a_cost + ceil(k1 * nt * bb / b_rate))
                    fixp = costs.dma_cycles_uncontended(cfg, Path.L0C_TO_GM, ceil(mt * nt * ob))
                    tile = max(cube, mte1, mte2) + (0 if l0c_slots == 2 else fixp)
                    tiles_m, tiles_n = ceil(m / m0), ceil(n / n0)
                    if partition == "columns":
                        rounds = tiles_m * ceil(ceil(ceil(n / 16) / cores) * 16 / n0)
                    else:
                        rounds = ceil(tiles_m * tiles_n / cores)
                    est = rounds * tile + fixp
                    if b_producer is not None:
                        est = (max(est, ceil(b_producer(n0, k1))) + mte2_start + ceil(k1 * nt * bb / b_rate)
                               + ceil(mte1 * min(k1, k) / k))
                    gm_bytes = tiles_m * tiles_n * (mt + nt) * k
                    score = (est, gm_bytes, -m0 * n0)
                    if best is None or score < best[0]:
                        best = (score, GemmTiling(m0, n0, k0, k1, l0c_slots, tiles_m, tiles_n, est))
    if best is None:
        raise GraphError(f"no GEMM tiling of {m}x{k}x{n} fits the buffers of {cfg.meta.name} "
                         f"(L0A {buf.l0a_bytes} B, L0B {buf.l0b_bytes} B, L0C {buf.l0c_bytes} B, L1 {buf.l1_bytes} B)")
    return best[1]


def assign_tiles(m: int, n: int, t: GemmTiling, cores: int, partition: str, share: int = 1) -> list[list[tuple]]:
    """Output tiles ((r0, r1), (c0, c1)) per core.

    round_robin: m0 x n0 tiles dealt in row-major order (cores working together share rows of X).
    columns: N cut into `cores // share` contiguous ranges that differ by at most one 16-column fractal,
    each cut into sub-tiles of at most n0; the `share` cores of a range take its row tiles in turn (core j
    of the range: row tiles j, j + share, ...) and run every one of them for a sub-tile before the next.
    Decode GEMMs (one row tile) then balance to within one fractal column instead of one n0 tile.
    """
    rows = split(m, t.m0)
    if partition == "round_robin":
        tiles = [(r, c) for r in rows for c in split(n, t.n0)]
        return [tiles[c::cores] for c in range(min(cores, len(tiles)))]
    ranges = cores // share
    units = ceil(n / 16)
    base, extra = divmod(units, ranges)
    per_core, start = [], 0
    for c in range(ranges):
        width = (base + (1 if c < extra else 0)) * 16
        stop = min(n, start + width)
        if stop > start:
            parts = ceil((stop - start) / t.n0)
            step = ceil((stop - start) / parts / 16) * 16
            cols = split_range(start, stop, step)
            per_core += [[(r, col) for col in cols for r in rows[j::share]] for j in range(share) if rows[j::share]]
        start = stop
    return per_core


def l2_share(cfg: HardwareConfig, t: GemmTiling, m: int, k: int, n: int, cores: int, b_bytes: float,
             a_round_bytes: float) -> int:
    """Cores per column range (assign_tiles, "columns") for a schedule whose every row tile reads its
    columns of B from GM again (b_bytes per element) and a_round_bytes of A: L2 blocking along N, as
    CANN's matmul blocks operands that exceed L2 (docs/formulas.md, section 2, "Cores per column range").

    With s cores per range, the B all cores read in one round of tiles is the first sub-tile of every
    range; L2 keeps it for the next round only if it fits beside that round's A (an LRU line survives
    while fewer than L2 bytes are touched between two reads of it), and then B comes from HBM once, else
    once per round of row tiles. s must divide the cores and the row tiles: the cores of a range then run
    the same number of tiles and stay in step, reading each chunk of B together (with a tile more for some
    they drift apart and read it again). Each s is priced as a roofline of the busiest core,
    max(t.est_cycles x imbalance, HBM bytes of B / B_hbm), where the imbalance is the rows of the range's
    busiest core x s / M (a short last row tile falls to one of them); the fastest wins, then the one
    with the fewest HBM bytes, then the smallest s."""
    if not cfg.l2.enabled:
        return 1
    rows = split(m, t.m0)
    best: tuple | None = None
    share = 1
    while share <= t.tiles_m and cores % share == 0:
        if t.tiles_m % share == 0:
            ranges = assign_tiles(m, n, t, cores, "columns", share)[::share]
            b_round = sum(c1 - c0 for tiles in ranges for _, (c0, c1) in tiles[:1]) * k * b_bytes
            fits = b_round + share * a_round_bytes <= cfg.l2.capacity_bytes
            hbm_bytes = n * k * b_bytes * (1 if fits else t.tiles_m // share)
            busiest = max(sum(r1 - r0 for r0, r1 in rows[j::share]) for j in range(share))
            cycles = max(t.est_cycles * busiest * share / m, hbm_bytes / cfg.hbm_bytes_per_cycle)
            if best is None or (cycles, hbm_bytes) < best[0]:
                best = ((cycles, hbm_bytes), share)
        share *= 2
    return best[1]


def split_range(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, stop)) for s in range(start, stop, step)]


def k_chunks(k: int, k1: int, k0: int, multiple: int = 1) -> list[tuple[int, int]]:
    """K cut into L1 chunks of k1, except that the last full chunk is cut in four (on k0 and `multiple`
    boundaries): after the last load the Cube then drains a quarter chunk, not a whole one."""
    chunks = split(k, k1)
    if len(chunks) < 2:
        return chunks
    a, b = chunks[-1]
    step = max(k0, ceil((b - a) / 4 / max(k0, multiple)) * max(k0, multiple))
    return chunks[:-1] + split_range(a, b, step)


def split(total: int, step: int) -> list[tuple[int, int]]:
    """[0, total) cut into [start, stop) pieces of `step` (the last one shorter)."""
    return [(s, min(s + step, total)) for s in range(0, total, step)]
