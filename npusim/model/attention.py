"""Closed-form models of the flash-attention schedules (native bf16, dequant int8, MSD-p int8 KV): cycles
and GM traffic (docs/formulas.md, "Attention").

Every size comes from the schedule the builder emits: npusim.kernels.attention.build.attention_schedule
(row groups, KV block, S and PV tiles, KV slots, the split into parts, which core runs which unit and
merge), the vector programs of npusim.kernels.attention.programs and every op cost of npusim.hw.costs.
What is modelled here is the time:

    unit  = setup + chain(first block) + sum over the other blocks of T_blk(n) + finish
    T_blk = max( busy per block of every pipe (AIC MTE2, MTE1, Cube, FixPipe; each AIV's MTE2, Vector, MTE3),
                 the core's HBM bytes per block x cores streaming / HBM bandwidth,
                 the Cube's in-order loop:  (Delta + PV + S) / 2,
                 the in-order KV-load loop: (KV load + S + Delta) / (kv_slots)  )
    Delta = S FixPipe + flag + AIV S load + softmax + P store + flag + AIC P load   (the AIV round trip)
    core  = sum of its units; total = max over cores + the log-sum-exp merge of split parts

The Cube runs S_t then PV_{t-1}: PV_{t-1} waits for the AIV round trip of block t-1 while S_t runs, and
S_{t+1} waits for PV_{t-1}, so two blocks take at least Delta + PV + S. The AIC MTE2 issues the load of
block t + (kv_slots - 2) before P_{t-1}: kv_slots blocks take at least one KV load, S and the round trip.

Traffic is counted, not estimated: every DMA the builder emits, by role (the same walk over units, blocks,
chunks and AIVs). Which reads miss L2 follows the simulator's rule (a region read or written before hits).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.graph.ops import Path, Role
from npusim.hw import costs
from npusim.kernels.attention.build import (
    DEQUANT_CHUNK_SLOTS, GM_RING, Q_CHUNK_ROWS, AttnSchedule, attention_schedule, operand_bytes, schedule_meta,
)
from npusim.kernels.attention.programs import (
    DEQUANT_KV, MERGE_ACC, MERGE_WEIGHTS, ROW_STATE, V_SCALE_MSD, finalize_steps, o_update_steps, q_msd_steps,
    softmax_steps,
)
from npusim.kernels.gemm.programs import program_cycles
from npusim.model.base import Gm, ModelResult, PipeTime, Traffic, finish, register
from npusim.numerics.attention import block_needs_mask

R = Role
METHODS = ("native", "dequant", "msd")


# ---- traffic: every GM transfer of the schedule, by role -------------------------------------------------

class _Ledger:
    """Traffic plus the simulator's L2 rule for the expected HBM reads: a region hits if it was read or
    written before (the rings, the workspace, a KV block another row group read first)."""

    def __init__(self, l2: bool):
        self.tr = Traffic()
        self.l2 = l2
        self.seen: set = set()
        self.written: set = set()

    def rd(self, role: Role, key, nbytes: int) -> bool:
        hit = self.l2 and key in self.seen
        self.seen.add(key)
        self.tr.rd(role, nbytes, hit)
        return hit

    def wr(self, role: Role, key, nbytes: int) -> None:
        self.tr.wr(role, nbytes, fresh=key not in self.written)  # a ring slot rewritten stays one dirty region
        self.written.add(key)
        self.seen.add(key)


def _rows_of(s: AttnSchedule, rw: int, n_aiv: int) -> list[tuple[int, int]]:
    rv = s.plan.rv
    return [(min(rw, a * rv), min(rw, (a + 1) * rv)) for a in range(n_aiv)]


def _chunks(n: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _dequant_chunks(s: AttnSchedule, a0: int, a1: int, n_aiv: int) -> list[list[tuple[int, int]]]:
    """Per AIV, the token chunks of block [a0, a1) it dequantizes (halves, then chunks of tc tokens)."""
    n = a1 - a0
    half = ceil(n / n_aiv)
    out = []
    for a in range(n_aiv):
        ta, tb = a0 + a * half, min(a1, a0 + (a + 1) * half)
        out.append([(x0, min(tb, x0 + s.plan.tc)) for x0 in range(ta, tb, s.plan.tc)])
    return out


def traffic(cfg: HardwareConfig, s: AttnSchedule) -> _Ledger:
    """Every GM read and write the builder emits (npusim.kernels.attention.build._Core), by role."""
    pl, p, dk, dv = s.plan, s.passes, s.dk, s.dv
    n_aiv = min(2, cfg.chip.aiv_per_core)
    _, _, pb = operand_bytes(s.method)
    ob = 4 if s.out == "fp32" else 2
    led = _Ledger(cfg.l2.enabled)
    tensors = [("k", dk)] + ([] if s.latent else [("v", dv)])
    ns = len(s.parts)
    for c, units in enumerate(s.core_units):
        for i, part in units:
            bb, h, (r0, r1) = s.items[i]
            rw = r1 - r0
            rows = _rows_of(s, rw, n_aiv)
            act = [a for a, (x0, x1) in enumerate(rows) if x1 > x0]
            if s.msd:
                for a in act:
                    x0, x1 = rows[a]
                    led.rd(R.KV_CACHE, ("ks", h), dk * 4)
                    led.rd(R.KV_CACHE, ("vs" if not s.latent else "ks_v", h), dv * 4)
                    for y0, y1 in _chunks(x1 - x0, Q_CHUNK_ROWS):
                        led.rd(R.ACTIVATION, ("q", bb, h, r0 + x0 + y0, r0 + x0 + y1), (y1 - y0) * dk * 2)
                        led.wr(R.ACTIVATION, ("qa", c, x0 + y0), p * (y1 - y0) * dk)
                led.rd(R.ACTIVATION, ("qa", c), p * rw * dk)
            else:
                led.rd(R.ACTIVATION, ("q", bb, h, r0, r1), rw * dk * 2)
                if s.method == "dequant":
                    for _ in range(n_aiv):
                        led.rd(R.KV_CACHE, ("ks", h), dk * 4)
                        if not s.latent:
                            led.rd(R.KV_CACHE, ("vs", h), dv * 4)
            for t, (a0, a1) in enumerate(s.parts[part]):
                n, j = a1 - a0, t % GM_RING
                for name, width in tensors:
                    if s.method == "dequant":
                        for a, chunks in enumerate(_dequant_chunks(s, a0, a1, n_aiv)):
                            for x0, x1 in chunks:
                                led.rd(R.KV_CACHE, (name, bb, h, x0, x1), (x1 - x0) * width)
                                if not pl.kv_direct:
                                    led.wr(R.WORKSPACE, (name + "ws", c, j, x0 - a0), (x1 - x0) * width * 2)
                        if not pl.kv_direct:
                            led.rd(R.WORKSPACE, (name + "ws", c, j), n * width * 2)
                    else:
                        led.rd(R.KV_CACHE, (name, bb, h, a0, a1), n * width * (2 if s.method == "native" else 1))
                led.wr(R.PARTIAL, ("s", c, j), p * rw * n * 4)
                for a in act:
                    x0, x1 = rows[a]
                    led.rd(R.PARTIAL, ("s", c, j), p * (x1 - x0) * n * 4)
                    led.wr(R.ACTIVATION, ("p", c, j), p * (x1 - x0) * n * pb)
                led.rd(R.ACTIVATION, ("p", c, j), p * rw * n * pb)
                for c0, c1 in _chunks(dv, pl.nc):
                    led.wr(R.PARTIAL, ("pv", c, j), p * rw * (c1 - c0) * 4)
                    for a in act:
                        x0, x1 = rows[a]
                        led.rd(R.PARTIAL, ("pv", c, j), p * (x1 - x0) * (c1 - c0) * 4)
            for a in act:
                x0, x1 = rows[a]
                if ns > 1:
                    led.wr(R.PARTIAL, ("opart", i, part), (x1 - x0) * dv * 4)
                    led.wr(R.PARTIAL, ("mpart", i, part), (x1 - x0) * 4)
                    led.wr(R.PARTIAL, ("lpart", i, part), (x1 - x0) * 4)
                else:
                    for c0, c1 in _chunks(dv, pl.nc):
                        led.wr(R.OUTPUT, ("o", bb, h, r0 + x0, c0), (x1 - x0) * (c1 - c0) * ob)
        for i, ca, cb in s.merges[c]:
            bb, h, (r0, r1) = s.items[i]
            for x0, x1 in _rows_of(s, r1 - r0, n_aiv):
                rv = x1 - x0
                if rv <= 0:
                    continue
                led.rd(R.PARTIAL, ("mpart", i), ns * rv * 4)
                led.rd(R.PARTIAL, ("lpart", i), ns * rv * 4)
                for c0 in range(ca, cb, pl.nc):
                    c1 = min(cb, c0 + pl.nc)
                    for _ in range(ns):
                        led.rd(R.PARTIAL, ("opart", i), rv * (c1 - c0) * 4)
                    led.wr(R.OUTPUT, ("o", bb, h, r0 + x0, c0), rv * (c1 - c0) * ob)
    return led


# ---- time ----------------------------------------------------------------------------------------------

@dataclass
class _Block:
    """One KV block of n tokens on one core: busy cycles per pipe, HBM bytes, and the chain pieces."""
    busy: dict          # pipe key -> cycles (AIV pipes: the busier AIV)
    hbm_bytes: float    # this core's HBM bytes for the block (misses; everything with L2 off)
    kv: float           # KV into L1: latency from the first load's issue to the block in L1
    kv_aic: float       # the part of it on the AIC's MTE2 (the load a P load can queue behind)
    p_load: float       # the AIC's P load
    s_aic: float        # S on the AIC (first L0 step + Cube)
    delta: float        # AIV round trip: S FixPipe .. P in L1
    pv_aic: float       # PV on the AIC (first L0 step + Cube)
    soft: float         # S FixPipe + flag + AIV S load + softmax (the part of delta before P leaves)
    tail: float         # PV FixPipe of the last chunk + flag + PV load + O update of the last chunk
    # dequant, the busier AIV: its chunk pipeline (the slowest pipe per chunk), then its S load, softmax
    # and O updates, less the chunk loads its slots let MTE2 run during the softmax (pipe -> cycles)
    aiv_serial: dict = field(default_factory=dict)
    # dequant on the direct UB->L1 path, the busier AIV: its softmax -> P -> PV -> the chunks of a later block
    # into the L1 slot that PV frees -> its O-update loads, which the next S load queues behind
    slot_chain: dict = field(default_factory=dict)


class _Core:
    """The cost of every op of one core's program, priced like the simulator prices it (Gm, costs)."""

    def __init__(self, cfg: HardwareConfig, s: AttnSchedule, streams: int):
        self.cfg, self.s, self.gm = cfg, s, Gm(cfg)
        self.l2 = cfg.l2.enabled
        self.streams = streams
        self.n_aiv = min(2, cfg.chip.aiv_per_core)
        self.cross, self.intra = cfg.sync.cross_core_flag_cycles, cfg.sync.intra_core_flag_cycles
        self.ab, self.kb, self.pb = operand_bytes(s.method)
        self.dtype = "int8" if s.msd else "bf16"
        # row groups of one (batch, kv-head) read the same KV blocks: the first to start misses L2, the
        # others hit (MLA's 128 heads are three to six groups)
        self.kv_sharers = ceil(s.rows / s.plan.rows_w) if self.l2 else 1

    # transfers
    def rd(self, path: Path, nbytes: float, hit: bool) -> float:
        """A GM read: an L2 hit at its rate, a miss at start + first byte + bytes / port (its bandwidth
        share is the separate HBM term)."""
        if hit and self.l2:
            return self.gm.read(path, int(nbytes), True)
        return self.gm.miss(path, int(nbytes), 1)[0]

    def wr(self, path: Path, nbytes: float) -> float:
        return self.gm.write(path, int(nbytes))

    def on_chip(self, path: Path, nbytes: float) -> float:
        return self.gm.on_chip(path, int(nbytes))

    def l0_steps(self, rows: int, k_total: int, width: int) -> tuple[float, float, float]:
        """(MTE1, Cube, first MTE1 step) of acc = A (rows x k_total) x B (k_total x width) in k0 steps."""
        cfg, k0 = self.cfg, self.s.plan.k0
        mte1 = cube = 0.0
        first = None
        for ka, kb in _chunks(k_total, k0):
            q = kb - ka
            m1 = (costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, rows * q * self.ab)
                  + costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, q * width * self.kb))
            mte1 += m1
            cube += costs.mmad_cycles(cfg, rows, q, width, self.dtype)
            if first is None:
                first = m1
        return mte1, cube, first or 0.0

    def block(self, t: int, a0: int, a1: int, rw: int, rows: list[tuple[int, int]]) -> _Block:
        cfg, s, pl = self.cfg, self.s, self.s.plan
        p, dk, dv = s.passes, s.dk, s.dv
        n = a1 - a0
        ra = p * rw
        l2 = self.l2
        act = [r for r in rows if r[1] > r[0]]
        share = 1.0 / self.kv_sharers
        busy: dict[str, float] = defaultdict(float)
        hbm = 0.0
        tensors = [dk] + ([] if s.latent else [dv])
        # -- KV into L1
        kv_lat = 0.0
        serial: dict[int, dict] = defaultdict(lambda: defaultdict(float))   # dequant, per AIV: see aiv_serial
        chunk_ld: dict[int, float] = {}
        drain: dict[int, float] = defaultdict(float)   # direct path: the chunk stores after the slot frees
        staged: dict[int, int] = defaultdict(int)
        if s.method == "dequant":
            per_aiv = _dequant_chunks(s, a0, a1, self.n_aiv)
            for width in tensors:
                worst = 0.0
                for a, chunks in enumerate(per_aiv):
                    ld = vec = st = 0.0
                    for x0, x1 in chunks:
                        e = (x1 - x0) * width
                        ld1 = share * self.rd(Path.GM_TO_UB, e, False) + (1 - share) * self.rd(Path.GM_TO_UB, e, True)
                        vec1 = program_cycles(cfg, DEQUANT_KV, e)
                        st1 = (self.on_chip(Path.UB_TO_L1, 2 * e) if pl.kv_direct
                               else self.wr(Path.UB_TO_GM, 2 * e))
                        ld, vec, st = ld + ld1, vec + vec1, st + st1
                        top = max((ld1, "aiv.mte2"), (vec1, "aiv.vector"), (st1, "aiv.mte3"))
                        serial[a][top[1]] += top[0]
                        # the first chunks wait in the UB slots (loaded, or converted too) when the L1
                        # slot frees; each later one's load waits for a store, one chunk stage apiece
                        if staged[a] >= 2 * DEQUANT_CHUNK_SLOTS:
                            drain[a] += top[0]
                        staged[a] += 1
                        chunk_ld[a] = max(chunk_ld.get(a, 0.0), ld1)
                        hbm += e * (share if l2 else 1) + (0 if l2 or pl.kv_direct else 2 * e)
                    busy[f"aiv{a}.mte2"] += ld
                    busy[f"aiv{a}.vector"] += vec
                    busy[f"aiv{a}.mte3"] += st
                    if chunks:
                        e0 = (chunks[0][1] - chunks[0][0]) * width
                        # pipelined over the chunks: the slowest stage, plus the others' first item
                        first = (self.rd(Path.GM_TO_UB, e0, False) + program_cycles(cfg, DEQUANT_KV, e0)
                                 + (self.on_chip(Path.UB_TO_L1, 2 * e0) if pl.kv_direct
                                    else self.wr(Path.UB_TO_GM, 2 * e0)))
                        worst = max(worst, max(ld, vec, st) + first - max(
                            self.rd(Path.GM_TO_UB, e0, False), program_cycles(cfg, DEQUANT_KV, e0)))
                lat = worst + self.cross
                if not pl.kv_direct:
                    ld = self.rd(Path.GM_TO_L1, n * width * 2, True)
                    busy["aic.mte2"] += ld
                    lat += ld
                    if not l2:
                        hbm += n * width * 2
                kv_lat = max(kv_lat, lat)
        else:
            b = 2 if s.method == "native" else 1
            for width in tensors:
                nbytes = n * width * b
                miss = self.rd(Path.GM_TO_L1, nbytes, False)
                hit = self.rd(Path.GM_TO_L1, nbytes, True) if l2 else miss
                cyc = share * miss + (1 - share) * hit
                busy["aic.mte2"] += cyc
                kv_lat += cyc
                hbm += nbytes * share
        # -- S: Cube tiles of s_chunk tokens, FixPipe per tile (per AIV's rows when there are several)
        chunks = _chunks(n, pl.s_chunk)
        s_mte1 = s_cube = 0.0
        s_first = None
        fix_last = 0.0
        for s0, s1 in chunks:
            m1, cu, f1 = self.l0_steps(ra, dk, s1 - s0)
            s_mte1 += m1
            s_cube += cu
            s_first = f1 if s_first is None else s_first
            outs = [(0, rw)] if len(chunks) == 1 else act
            fix = [self.wr(Path.L0C_TO_GM, p * (x1 - x0) * (s1 - s0) * 4) for x0, x1 in outs]
            busy["aic.fixp"] += sum(fix)
            fix_last = sum(fix)
            if not l2:
                hbm += p * rw * (s1 - s0) * 4
        busy["aic.mte1"] += s_mte1
        busy["aic.cube"] += s_cube
        s_aic = max(s_first + s_cube, s_mte1)   # MTE1 and Cube pipelined over double-buffered L0A / L0B
        # -- softmax on each AIV, P to the AIC
        masked = block_needs_mask(s.kv_len, s.q_len, a1)
        soft = {}
        for a, (x0, x1) in enumerate(rows):
            r = x1 - x0
            if r <= 0:
                continue
            ls = self.rd(Path.GM_TO_UB, p * r * n * 4, True)
            vec = program_cycles(cfg, softmax_steps(s.method, p, masked), r * n)
            if t > 0:
                vec += program_cycles(cfg, ROW_STATE, r)
            stp = self.wr(Path.UB_TO_GM, p * r * n * self.pb)
            busy[f"aiv{a}.mte2"] += ls
            busy[f"aiv{a}.vector"] += vec
            busy[f"aiv{a}.mte3"] += stp
            soft[a] = (ls, vec, stp)
            if a in chunk_ld:
                # the chunk loads that run during the softmax save only load-bound chunk time
                saved = min(DEQUANT_CHUNK_SLOTS * chunk_ld[a], vec, serial[a]["aiv.mte2"])
                serial[a]["aiv.mte2"] += ls - saved
                serial[a]["aiv.vector"] += vec
            if not l2:
                hbm += p * r * n * 4 + p * r * n * self.pb
        lp = self.rd(Path.GM_TO_L1, p * rw * n * self.pb, True)
        busy["aic.mte2"] += lp
        if not l2:
            hbm += p * rw * n * self.pb
        delta = fix_last + self.cross + max(sum(v) for v in soft.values()) + self.cross + lp
        soft_lat = fix_last + self.cross + max(ls + vec for ls, vec, _ in soft.values())
        # -- PV in column tiles of nc, FixPipe, O update on the AIVs
        pv_mte1 = pv_cube = 0.0
        pv_first = None
        o_loads: dict[int, float] = defaultdict(float)
        tail = 0.0
        for c0, c1 in _chunks(dv, pl.nc):
            m1, cu, f1 = self.l0_steps(ra, n, c1 - c0)
            pv_mte1 += m1
            pv_cube += cu
            pv_first = f1 if pv_first is None else pv_first
            fx = self.wr(Path.L0C_TO_GM, p * rw * (c1 - c0) * 4)
            busy["aic.fixp"] += fx
            if not l2:
                hbm += p * rw * (c1 - c0) * 4
            worst = 0.0
            for a, (x0, x1) in enumerate(rows):
                r = x1 - x0
                if r <= 0:
                    continue
                lo = self.rd(Path.GM_TO_UB, p * r * (c1 - c0) * 4, True)
                vec = program_cycles(cfg, o_update_steps(s.method, p, t == 0), r * (c1 - c0))
                busy[f"aiv{a}.mte2"] += lo
                busy[f"aiv{a}.vector"] += vec
                o_loads[a] += lo
                worst = max(worst, lo + vec)
                if a in chunk_ld:
                    serial[a]["aiv.mte2"] += lo
                    serial[a]["aiv.vector"] += vec
                if not l2:
                    hbm += p * r * (c1 - c0) * 4
            tail = fx + self.cross + worst
        busy["aic.mte1"] += pv_mte1
        busy["aic.cube"] += pv_cube
        pv_aic = max(pv_first + pv_cube, pv_mte1)
        chain: dict[int, dict] = {}
        if s.method == "dequant" and pl.kv_direct:
            for a, (ls, vec, stp) in soft.items():
                chain[a] = {"aiv.mte2": ls + o_loads[a], "aiv.vector": vec, "aiv.mte3": stp + drain[a],
                            "flag": 2 * self.cross, "aic.mte2": lp, "aic.cube": pv_aic}
        # AIV pipes: the two AIVs work in parallel: the block costs the busier one
        out: dict[str, float] = {}
        for k, v in busy.items():
            key = "aiv." + k.split(".", 1)[1] if k.startswith("aiv") else k
            out[key] = max(out.get(key, 0.0), v)
        kv_aic = busy.get("aic.mte2", 0.0) - lp
        return _Block(out, hbm, kv_lat, kv_aic, lp, s_aic, delta, pv_aic, soft_lat, tail,
                      dict(max(serial.values(), key=lambda d: sum(d.values()), default={})),
                      max(chain.values(), key=lambda d: sum(d.values()), default={}))

    def steady(self, b: _Block) -> tuple[float, str, dict[str, float]]:
        """T_blk and the stage that binds it, with the attribution of its cycles."""
        cfg, pl = self.cfg, self.s.plan
        cand: dict[str, tuple[float, dict]] = {k: (v, {k: v}) for k, v in b.busy.items()}
        cand["hbm"] = (b.hbm_bytes * self.streams / cfg.hbm_bytes_per_cycle, None)
        cand["hbm"] = (cand["hbm"][0], {"hbm": cand["hbm"][0]})
        loop = (b.delta + b.pv_aic + b.s_aic) / 2
        parts = {"aic.cube": b.pv_aic + b.s_aic, "aiv.vector": b.delta - 2 * self.cross, "flag": 2 * self.cross}
        cand["loop:cube_order"] = (loop, {k: v / 2 for k, v in parts.items()})
        # on the in-order AIC MTE2 the P load of a block queues behind a block's KV (or workspace) load,
        # which starts about when the Cube starts the S before it: T >= KV load + P load + PV
        pq = b.kv_aic + b.p_load + b.pv_aic
        cand["loop:p_behind_kv"] = (pq, {"aic.mte2": b.kv_aic + b.p_load, "aic.cube": b.pv_aic})
        n_sl = pl.kv_slots
        # a block's KV lands in the slot of a block n_sl back, freed by its PV; between that PV and the S
        # of the new block the AIC runs n_sl - 2 blocks' S and PV: n_sl - 1 blocks per load + S + PV
        loop3 = (b.kv + b.s_aic + b.pv_aic) / (n_sl - 1)
        parts3 = {"aic.mte2": b.kv, "aic.cube": b.s_aic + b.pv_aic}
        cand["loop:kv_slots"] = (loop3, {k: v / (n_sl - 1) for k, v in parts3.items()})
        if self.s.method != "dequant":
            # the in-order AIC MTE2 issues the load of block t + n_sl - 2 after P_{t-2}: n_sl blocks per
            # load + S + the AIV round trip
            loop2 = (b.kv + b.s_aic + b.delta) / n_sl
            parts2 = {"aic.mte2": b.kv, "aic.cube": b.s_aic, "aiv.vector": b.delta - 2 * self.cross,
                      "flag": 2 * self.cross}
            cand["loop:mte2_order"] = (loop2, {k: v / n_sl for k, v in parts2.items()})
        else:
            # the AIVs' in-order Vector dequantizes block t + n_sl - 1 after the softmax of block t - 1,
            # which waits for that block's dequant -> hand-off -> S -> S load chain: n_sl blocks
            loop4 = (b.kv + b.s_aic + b.soft) / n_sl
            parts4 = {"aiv.vector": b.kv + b.soft - 2 * self.cross, "aic.cube": b.s_aic, "flag": 2 * self.cross}
            cand["loop:aiv_order"] = (loop4, {k: v / n_sl for k, v in parts4.items()})
            # the in-order Vector alternates the dequant chunks and the softmax / O updates, and the MTE2
            # can load only DEQUANT_CHUNK_SLOTS chunks ahead while the softmax runs
            cand["aiv:chunks_then_softmax"] = (sum(b.aiv_serial.values()), b.aiv_serial)
            if b.slot_chain:
                # direct path: block t + kv_slots is dequantized after the softmax of block t, into the L1
                # slot PV_t frees; the in-order AIV MTE3 holds its chunks until then, the chunk slots stall
                # the MTE2 behind them, and the next block's S load queues behind those chunk loads and the
                # O-update loads: one block per softmax -> P -> PV -> chunk stores -> O loads
                cand["loop:direct_slot"] = (sum(b.slot_chain.values()), b.slot_chain)
        key = max(cand, key=lambda k: cand[k][0])
        return cand[key][0], key, cand[key][1]


def _merge_time(cfg: HardwareConfig, s: AttnSchedule, core: _Core, merges: list) -> float:
    """The log-sum-exp merge of the core's output column shares (its AIVs in parallel)."""
    pl, ns = s.plan, len(s.parts)
    total = 0.0
    for i, ca, cb in merges:
        _, _, (r0, r1) = s.items[i]
        worst = 0.0
        for x0, x1 in _rows_of(s, r1 - r0, core.n_aiv):
            rv = x1 - x0
            if rv <= 0:
                continue
            t = 2 * core.rd(Path.GM_TO_UB, ns * rv * 4, True) + program_cycles(cfg, MERGE_WEIGHTS, ns * rv)
            for c0 in range(ca, cb, pl.nc):
                c1 = min(cb, c0 + pl.nc)
                e = rv * (c1 - c0)
                lo = core.rd(Path.GM_TO_UB, e * 4, True)
                t += max(ns * lo, ns * program_cycles(cfg, MERGE_ACC, e)) + min(lo, program_cycles(cfg, MERGE_ACC, e))
                t += program_cycles(cfg, finalize_steps(s.method, s.out), e)
            t += core.wr(Path.UB_TO_GM, rv * min(pl.nc, cb - ca) * (4 if s.out == "fp32" else 2))
            worst = max(worst, t)
        total += worst + core.cross
    return total


def _setup(cfg: HardwareConfig, s: AttnSchedule, core: _Core, rw: int, rows) -> float:
    """From the unit's start to Q in L1 (the first KV loads run beside it)."""
    dk, dv, p = s.dk, s.dv, s.passes
    if not s.msd:
        return core.rd(Path.GM_TO_L1, rw * dk * 2, False)
    worst = 0.0
    for x0, x1 in rows:
        if x1 <= x0:
            continue
        t = core.rd(Path.GM_TO_UB, dk * 4, False) + core.rd(Path.GM_TO_UB, dv * 4, False)
        t += program_cycles(cfg, V_SCALE_MSD, dv)
        chunks = _chunks(x1 - x0, Q_CHUNK_ROWS)
        ld = [core.rd(Path.GM_TO_UB, (b - a) * dk * 2, False) for a, b in chunks]
        vec = [program_cycles(cfg, q_msd_steps(p), (b - a) * dk) for a, b in chunks]
        st = [core.wr(Path.UB_TO_GM, p * (b - a) * dk) for a, b in chunks]
        t += ld[0] + max(sum(ld[1:]), sum(vec)) + st[-1]
        worst = max(worst, t)
    return worst + core.cross + core.rd(Path.GM_TO_L1, p * rw * dk, True)


def _finish(cfg: HardwareConfig, s: AttnSchedule, core: _Core, rows) -> float:
    pl, dv = s.plan, s.dv
    worst = 0.0
    for x0, x1 in rows:
        rv = x1 - x0
        if rv <= 0:
            continue
        if len(s.parts) > 1:
            t = core.wr(Path.UB_TO_GM, rv * dv * 4) + 2 * core.wr(Path.UB_TO_GM, rv * 4)
        else:
            ch = _chunks(dv, pl.nc)
            vec = sum(program_cycles(cfg, finalize_steps(s.method, s.out), rv * (c1 - c0)) for c0, c1 in ch)
            t = vec + core.wr(Path.UB_TO_GM, rv * (ch[-1][1] - ch[-1][0]) * (4 if s.out == "fp32" else 2))
        worst = max(worst, t)
    return worst


def _unit_time(cfg: HardwareConfig, s: AttnSchedule, core: _Core, rw: int, blocks: list, memo: dict):
    """(cycles, attribution, binding stage, steady blocks, busy) of one (item, part) unit."""
    rows = _rows_of(s, rw, core.n_aiv)

    def blk(t, a0, a1):
        key = (t == 0, a1 - a0, block_needs_mask(s.kv_len, s.q_len, a1), rw)
        if key not in memo:
            b = core.block(t, a0, a1, rw, rows)
            memo[key] = (b, core.steady(b))
        return memo[key]

    att: dict[str, float] = defaultdict(float)
    busy: dict[str, float] = defaultdict(float)
    setup = _setup(cfg, s, core, rw, rows)
    first, _ = blk(0, *blocks[0])
    # S_0 starts once Q and the first KV block are in L1
    lead = max(setup, first.kv)
    chain = lead + first.s_aic + first.delta + first.pv_aic + first.tail
    att["aic.mte2" if first.kv >= setup or not s.msd else "aiv.vector"] += lead
    att["aic.cube"] += first.s_aic + first.pv_aic
    att["aiv.vector"] += first.delta + first.tail - 3 * core.cross
    att["flag"] += 3 * core.cross
    for k, v in first.busy.items():
        busy[k] += v
    steady = 0.0
    bound = None
    for t, (a0, a1) in enumerate(blocks[1:], start=1):
        b, (tb, key, parts) = blk(t, a0, a1)
        steady += tb
        if bound is None or a1 - a0 == s.plan.block:
            bound = key
        for k, v in parts.items():
            att[k] += v
        for k, v in b.busy.items():
            busy[k] += v
    fin = _finish(cfg, s, core, rows)
    att["aiv.vector"] += fin
    return chain + steady + fin, att, bound, len(blocks) - 1, busy


def _timing(cfg: HardwareConfig, s: AttnSchedule) -> dict:
    """Per core: its units in order; the chip: the slowest core, then the merge of split parts, and at
    least the chip's HBM bytes at the full bandwidth."""
    core = _Core(cfg, s, s.used_cores)
    memo: dict = {}
    umemo: dict = {}
    per_core = []
    for units in s.core_units:
        total, att, busy = 0.0, defaultdict(float), defaultdict(float)
        bound, steady_n = None, 0
        for i, part in units:
            _, _, (r0, r1) = s.items[i]
            key = (r1 - r0, part)
            if key not in umemo:
                umemo[key] = _unit_time(cfg, s, core, r1 - r0, s.parts[part], memo)
            t, a, bd, n, bz = umemo[key]
            total += t
            steady_n += n
            bound = bound or bd
            for k, v in a.items():
                att[k] += v
            for k, v in bz.items():
                busy[k] += v
        per_core.append((total, att, bound, steady_n, busy))
    cmax = max(range(len(per_core)), key=lambda c: per_core[c][0])
    total, att, bound, steady_n, busy = per_core[cmax]
    att = dict(att)
    mkey = [tuple(m) for m in s.merges]
    merge = max((_merge_time(cfg, s, core, m) for m in set(mkey)), default=0.0)
    if merge:
        att["aiv.vector"] = att.get("aiv.vector", 0.0) + merge
    return {"cycles": total + merge, "attribution": att, "bound": bound or "aic.mte2", "steady_blocks": steady_n,
            "busy": dict(busy), "core": cmax, "units": len(s.core_units[cmax])}


def schedule_cycles(cfg: HardwareConfig, s: AttnSchedule) -> float:
    """Modelled cycles of a schedule (the builder ranks its candidate plans with this)."""
    return _timing(cfg, s)["cycles"]


def model_attention(cfg: HardwareConfig, *, method: str, batch: int, q_heads: int, kv_heads: int, q_len: int,
                    kv_len: int, head_dim: int, rope_dim: int = 0, latent: bool = False, passes: int = 2,
                    block: int | None = None, cores: int | None = None, kv_slots: int | None = None,
                    rows_per_item: int | None = None, out: str = "bf16", **_) -> ModelResult:
    """The model of one attention schedule, with the arguments of npusim.kernels.attention.build_attention."""
    s = attention_schedule(cfg, batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
                           head_dim=head_dim, rope_dim=rope_dim, latent=latent,
                           kv="bf16" if method == "native" else "int8", method=method, passes=passes,
                           block=block, cores=cores, kv_slots=kv_slots, rows_per_item=rows_per_item, out=out)
    led = traffic(cfg, s)
    tm = _timing(cfg, s)
    cycles, att = tm["cycles"], tm["attribution"]
    # the chip's HBM floor: every HBM byte at the full bandwidth
    if cfg.l2.enabled:
        hbm_total = sum(led.tr.hbm_read.values())
    else:
        hbm_total = sum(led.tr.read.values()) + sum(led.tr.write.values())
    floor = hbm_total / cfg.hbm_bytes_per_cycle
    notes = []
    if floor > cycles:
        notes.append(f"chip HBM floor {floor:.0f} cycles above the per-core pipeline {cycles:.0f}")
        att = {"hbm": floor}
        cycles = floor
    pt = PipeTime(cycles, tm["bound"], att, tm["busy"])
    shape = {"batch": batch, "q_heads": q_heads, "kv_heads": kv_heads, "q_len": q_len, "kv_len": kv_len,
             "head_dim": head_dim, "rope_dim": rope_dim, "latent": latent}
    if s.msd:
        shape["passes"] = passes
    return finish("attention", method, cfg, shape, [("attention", pt)], led.tr,
                  tiles=tm["steady_blocks"] + tm["units"], items=tm["steady_blocks"], core=tm["core"],
                  plan=schedule_meta(s), notes=notes)


for _m in METHODS:
    register("attention", _m)(lambda cfg, _m=_m, **kw: model_attention(cfg, method=_m, **kw))
