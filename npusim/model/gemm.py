"""Closed-form models of the GEMM schedules (native bf16, dequant int8, MSD-p int8): cycles and GM traffic.

Every size comes from the code the schedule builders call: the tiling (choose_gemm_tiling with the same
arguments as npusim.kernels.gemm.native / quant), the tile assignment (assign_tiles), the K chunks
(k_chunks), the vector programs (npusim.kernels.gemm.programs) and every op cost (npusim.hw.costs). What is
modelled here, and not taken from the builders, is the time: per pipe, the busy cycles of the core with
the most work, composed by the pipeline formula of npusim.model.base.pipeline (docs/formulas.md).

Traffic is counted, not estimated: for every core and every tile the bytes the schedule moves, by role.
"""

from __future__ import annotations

from collections import defaultdict
from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.graph.ops import Path, Role, Unit
from npusim.hw import costs
from npusim.kernels.gemm import quant
from npusim.kernels.gemm.handoff import WORKSPACE_RING, workspace_is_ring
from npusim.kernels.gemm.native import check_shape
from npusim.kernels.gemm.programs import (DEQUANT, MSD_ABSMAX, msd_decompose_steps, msd_recombine_steps,
                                          program_cycles)
from npusim.kernels.gemm.tiling import assign_tiles, choose_gemm_tiling, k_chunks, split
from npusim.model.base import (Gm, ModelResult, PipeTime, Stage, Traffic, finish, l2_replay, l2_replay_timed, pipeline,
                               register, set_round)

R = Role


def _tiling(t) -> dict:
    """The tiling as the builders record it in graph.meta['tiling'] (npusim.kernels.gemm.native.tiling_meta)."""
    from npusim.kernels.gemm.native import tiling_meta
    return tiling_meta(t)


def _ksteps(kt: int, k0: int, fn) -> tuple[int, int]:
    """(total, count) of fn(q) over the L0 steps of one chunk: split(kt, k0)."""
    full, rem = divmod(kt, k0)
    total = full * fn(k0) + (fn(rem) if rem else 0)
    return total, full + (1 if rem else 0)


class _Aic:
    """The AIC's pipes of one core, and the K loop of CubeLoop.chunk priced with costs.*."""

    def __init__(self, cfg: HardwareConfig, k0: int, a_bytes: float, b_bytes: float, dtype: str, l0c_slots: int):
        self.cfg, self.k0, self.ab, self.bb, self.dtype = cfg, k0, a_bytes, b_bytes, dtype
        self.mte2, self.mte1, self.cube, self.fixp = (Stage("aic.mte2"), Stage("aic.mte1"), Stage("aic.cube"),
                                                      Stage("aic.fixp"))
        self.hbm = Stage("hbm")
        self.aloop = Stage("flag:a_slot_loop")
        # each round's cycles to the busier of the two pipes it couples, as their own rounds would
        self.l1loop = Stage("flag:l1_slot_loop", couples=(self.mte2, self.cube))
        self._le, self._cf, self._ce = 0.0, [0.0, 0.0], 0.0
        self._l1_tail = None
        self.l0c_slots = l0c_slots
        self._t0 = (0.0, 0.0)
        self._first_mte1, self._cube_tail, self._last_l0b = None, [], 0
        self._a_loaded = False   # the core's first load of A has been seen

    def tile_start(self) -> None:
        self._t0 = (self.mte1.busy, self.cube.busy)
        self._first_mte1, self._cube_tail = None, []

    def tile_end(self, a_reload: int) -> None:
        """A resident in one L1 slot (a_resident_k): a reload for the next row block waits until the
        current tile's MTE1 has read it, and that tile's MTE1 waits for the reload: per tile the slot is
        busy for reload + two intra-core flags + the later of the tile's MTE1 but its last L0B read (the
        last A read comes before it) and, Cube-bound, its first MTE1 step + its Cube but the last two L0
        steps (they run beside the next reload: L0A/L0B are double-buffered)."""
        f = self.cfg.sync.intra_core_flag_cycles
        d1, dc = self.mte1.busy - self._t0[0], self.cube.busy - self._t0[1]
        if not a_reload:
            return   # no reload before this tile: nothing waits on its MTE1
        # the core's first load of A waits for nothing: it runs beside the fill ahead of this position
        # (the weights' first chunk), and MTE2 already carries it
        if not self._a_loaded:
            self._a_loaded, a_reload = True, 0
        # MTE1-bound: the slot is free once the last L0A read is done (the last L0B read comes after it);
        # Cube-bound: the last L0A read waits for the Cube's third-last step
        by_mte1, by_cube = d1 - self._last_l0b, dc - sum(self._cube_tail) + (self._first_mte1 or 0)
        work = max(by_mte1, by_cube)
        self.aloop.block(a_reload + work + 2 * f, 0, 0, 1)  # a loop: no fill/drain of its own
        for key, v in (("aic.mte2", a_reload), ("aic.cube" if by_cube > by_mte1 else "aic.mte1", work),
                       ("flag", 2 * f)):
            self.aloop.parts[key] = self.aloop.parts.get(key, 0) + v

    def chunk(self, rows: int, kt: int, nt: int) -> int:
        cfg = self.cfg
        mte1, _ = _ksteps(kt, self.k0, lambda q: (
            costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, ceil(rows * q * self.ab))
            + costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, ceil(q * nt * self.bb))))
        cube, _ = _ksteps(kt, self.k0, lambda q: costs.mmad_cycles(cfg, rows, q, nt, self.dtype))
        self.mte1.add(mte1)
        self.cube.add(cube)
        if self._first_mte1 is None:   # the tile's first L0 step
            q = min(kt, self.k0)
            self._first_mte1 = (costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, ceil(rows * q * self.ab))
                                + costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, ceil(q * nt * self.bb)))
        # the Cube's last two L0 steps (L0A/L0B are double-buffered: MTE1 is done reading A before them)
        full, rem = divmod(kt, self.k0)
        tail = ([costs.mmad_cycles(cfg, rows, self.k0, nt, self.dtype)] * min(full, 2)
                + ([costs.mmad_cycles(cfg, rows, rem, nt, self.dtype)] if rem else []))
        self._cube_tail = (self._cube_tail + tail)[-2:]
        self._last_l0b = costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, ceil((rem or self.k0) * nt * self.bb))
        return mte1

    def l1_slots(self, load: float, rows: int, kt: int, nt: int) -> None:
        """The two L1 chunk slots as a max-plus recurrence over the core's chunks, in order: the load of
        chunk j (A and B, `load` cycles on the in-order MTE2) starts after the load of j - 1 and after
        the MTE1 of chunk j - 2 has read the slot; the chunk's L0 steps start after its load and after
        the Cube is done with j - 1. Chunks of unequal size (k_chunks cuts the last K chunk in four)
        stall each other this way: a big chunk of the next tile waits for the slot of a small one."""
        cfg, f = self.cfg, self.cfg.sync.intra_core_flag_cycles
        q = min(kt, self.k0)
        first = (costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, ceil(rows * q * self.ab))
                 + costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, ceil(q * nt * self.bb)))
        cube, _ = _ksteps(kt, self.k0, lambda x: costs.mmad_cycles(cfg, rows, x, nt, self.dtype))
        last = costs.mmad_cycles(cfg, rows, kt - (ceil(kt / self.k0) - 1) * self.k0, nt, self.dtype)
        le = max(self._le, self._cf[0]) + load
        # the chunk's first L0 step runs beside the Cube's last steps of chunk j - 1 (L0A/L0B are
        # double-buffered): only a chunk that lands after the Cube is idle pays it
        ce = max(self._ce, le + f + first) + cube
        self.l1loop.block(ce - self._ce, 0, 0, 1)
        self._le, self._cf, self._ce = le, [self._cf[1], ce - last + f], ce
        self._l1_tail = (f + first + cube, self.l1loop.cur)

    def with_miss(self, own: float, miss: tuple[int, float]) -> float:
        """A chunk's load time for the slot recurrence: its L2 reads (`own`) and its misses (`miss`, their
        summed latency and bandwidth terms), as Stage.settle prices them (beside the HBM stream where the
        cores drift apart, else after it)."""
        lat, bw = miss
        return max(own + lat, bw) if self.mte2.overlap else own + max(lat, bw)

    def drain(self, cycles: int) -> None:
        """FixPipe of one tile; with one L0C slot the Cube waits for it before the next tile."""
        self.fixp.add(cycles)
        if self.l0c_slots == 1:
            self.cube.busy += cycles
            self.cube.rounds[self.cube.cur] += cycles

    def stages(self) -> list[Stage]:
        return [self.mte2, self.mte1, self.cube, self.fixp, self.hbm, self.aloop, self.l1loop]

    def chain(self) -> tuple[list[list[Stage]], list[int]]:
        f = self.cfg.sync.intra_core_flag_cycles
        loop = [self.l1loop] if self.l1loop.items else []
        if loop and self._l1_tail:
            # the chain's drain after position 0 (flag, MTE1, Cube of the last item, ...) already holds
            # the last chunk's L0 steps: the loop stops at its load
            cut, r = self._l1_tail
            cut = min(cut, self.l1loop.rounds[r])
            self.l1loop.busy -= cut
            self.l1loop.rounds[r] -= cut
            self._l1_tail = None
        return [[self.mte2, self.hbm] + loop, [self.mte1], [self.cube] + self._aloop(), [self.fixp]], [f, f, f]

    def _aloop(self) -> list[Stage]:
        return [self.aloop] if self.aloop.parts.get("aic.mte2") else []


def _aiv_stages(n: int) -> list[dict[str, Stage]]:
    return [{p: Stage(f"aiv{i}.{p}") for p in ("mte2", "vector", "mte3")} for i in range(n)]


def _aiv_chain(cfg, aivs: list[dict[str, Stage]], hbm: Stage | None = None):
    f = cfg.sync.intra_core_flag_cycles
    first = [a["mte2"] for a in aivs] + ([hbm] if hbm is not None else [])
    return [first, [a["vector"] for a in aivs], [a["mte3"] for a in aivs]], [f, f]


def _hbm_shared(stages: list[Stage], bw: float) -> None:
    """Each core's HBM stage holds its HBM bytes; HBM is shared by the chip, so every core's HBM term is
    the chip's HBM bytes / bandwidth (the cores stream concurrently)."""
    total = sum(s.busy for s in stages)
    per_round: dict = {}
    for s in stages:
        for r, v in s.rounds.items():
            per_round[r] = per_round.get(r, 0) + v
    for s in stages:
        s.busy = total / bw
        s.rounds = {r: v / bw for r, v in per_round.items()}
        s.first = s.last = 0
        s.items = 1 if total else 0


def _timed(results, cfg, window: int = 1) -> list[tuple[PipeTime, int, int]]:
    _hbm_shared([r[1] for r in results], cfg.hbm_bytes_per_cycle)
    return [(pipeline(*chain, window=window), tiles, items) for chain, _, tiles, items in results]


def _slowest(per_core: list[tuple[PipeTime, int, int]]) -> tuple[PipeTime, int, int, int]:
    core = max(range(len(per_core)), key=lambda c: per_core[c][0].cycles)
    return (*per_core[core], core)


# ---- native bf16 -----------------------------------------------------------------------------------

@register("gemm", "native")
def model_native(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None, **_) -> ModelResult:
    cores = check_shape(cfg, m, k, n, cores)
    t = choose_gemm_tiling(cfg, m, k, n, cores)
    tiles = [(r, c) for r in split(m, t.m0) for c in split(n, t.n0)]
    per_core = [tiles[c::cores] for c in range(min(cores, len(tiles)))]
    chunks = k_chunks(k, t.k1, t.k0)
    gm = Gm(cfg)
    l2 = cfg.l2.enabled
    # Round-robin row-major: a W tile is re-read one pass over the row later; which reads still hit L2
    # is found by replaying the kernel's GM accesses through the simulator's L2 (_native_hits).
    hits = _native_hits(cfg, per_core, chunks) if l2 else set()
    tr = Traffic()
    results = []
    # streams of round r: the cores missing in its first K chunk, where each shared block's miss is on its
    # first reader in turn (an empirical choice, docs/formulas.md, S_r: counting every core that misses
    # in any chunk of the round put 15-23 native points per preset outside 10 %)
    streams = [sum(any((c, i, chunks[0][0], tag) not in hits for tag in ("x", "w"))
                   for c, ct in enumerate(per_core) if i < len(ct)) for i in range(max(len(ct) for ct in per_core))]
    for core, ct in enumerate(per_core):
        aic = _Aic(cfg, t.k0, 2, 2, "bf16", t.l0c_slots)
        # the cores do not move in lockstep (a shared block's miss puts its reader behind; HBM shares
        # stagger them): each one's L2 reads overlap the others' HBM reads (docs/formulas.md, section 1)
        aic.mte2.overlap = True
        for i, ((r0, r1), (c0, c1)) in enumerate(ct):
            set_round(aic.stages(), i)
            mt, nt = r1 - r0, c1 - c0
            for ka, kb in chunks:
                kt = kb - ka
                own, miss = 0, None
                for tag, role, nbytes in (("x", R.ACTIVATION, mt * kt * 2), ("w", R.WEIGHT, kt * nt * 2)):
                    hit = (core, i, ka, tag) in hits
                    tr.rd(role, nbytes, hit)
                    if hit:
                        own += gm.read(Path.GM_TO_L1, nbytes, True)
                    else:
                        one = gm.miss(Path.GM_TO_L1, nbytes, streams[i])
                        miss = one if miss is None else (miss[0] + one[0], miss[1] + one[1])
                        aic.mte2.add_miss(one)
                aic.mte2.add(own)
                ld = own if miss is None else aic.with_miss(own, miss)
                aic.l1_slots(ld, mt, kt, nt)
                if (core, i, ka, "w") not in hits:
                    aic.hbm.add(kt * nt * 2)
                if (core, i, ka, "x") not in hits:
                    aic.hbm.add(mt * kt * 2)
                aic.chunk(mt, kt, nt)
            tr.wr(R.OUTPUT, mt * nt * 2)
            aic.drain(gm.write(Path.L0C_TO_GM, mt * nt * 2))
            if not l2:
                aic.hbm.add(mt * nt * 2)
        results.append((aic.chain(), aic.hbm, len(ct), len(ct) * len(chunks)))
    pt, ntiles, items, core = _slowest(_timed(results, cfg))
    return finish("gemm", "native", cfg, {"m": m, "k": k, "n": n}, [("gemm", pt)], tr,
                  tiles=ntiles, items=items, core=core, plan={"tiling": _tiling(t)})


def _w_streams(cfg: HardwareConfig, w_bytes: int, per_core: list, chunks: list, w_hits: set) -> bool:
    """Whether MSD's AIC streams W from HBM for the whole kernel (docs/formulas.md, section 1): W does not
    fit L2, or the replay has W chunk reads missing after the cores' first tiles (columns read for the
    first time later on, or re-read after the stacked A, Y and the rest evicted them although W alone
    would fit)."""
    if not cfg.l2.enabled:
        return False
    return w_bytes > cfg.l2.capacity_bytes or any(
        (c, i, ka, "w") not in w_hits for c, ct in enumerate(per_core) for i in range(1, len(ct)) for ka, _ in chunks)


def _native_hits(cfg: HardwareConfig, per_core: list, chunks: list) -> set[tuple]:
    """(core, round, K chunk start, "x" or "w") of the native GEMM's X and W chunk reads that hit L2
    (l2_replay of its X and W chunk reads and Y writes)."""
    def chunk(core, i, tile, ka, kb):
        (r0, r1), (c0, c1) = tile
        yield "x", ("x", ((r0, r1), (ka, kb))), (r1 - r0) * (kb - ka) * 2, False
        yield "w", ("w", ((ka, kb), (c0, c1))), (kb - ka) * (c1 - c0) * 2, False

    def tile_end(core, i, tile):
        (r0, r1), (c0, c1) = tile
        yield "y", ("y", ((r0, r1), (c0, c1))), (r1 - r0) * (c1 - c0) * 2, True

    return l2_replay(cfg, per_core, chunks, chunk, tile_end)


# ---- dequant -----------------------------------------------------------------------------------------

@register("gemm", "dequant")
def model_dequant(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None,
                  weights: str = "int8", **_) -> ModelResult:
    quant.check_method(cfg, "dequant", weights, 2)
    cores = check_shape(cfg, m, k, n, cores)
    group_k = quant.GROUP_K if weights == "int8-g128" else None
    direct = cfg.dma.ub_to_l1 is not None
    # the builder's own choices: tiling, resident X, L1 weight slots
    plan = quant.dequant_plan(cfg, m, k, n, cores, group_k)
    t, resident, b_buffers = plan.tiling, plan.a_resident, plan.b_buffers
    steps = DEQUANT[weights]
    chunks = k_chunks(k, t.k1, t.k0, group_k or 1)
    per_core = assign_tiles(m, n, t, cores, "columns", plan.share)
    gm = Gm(cfg)
    l2 = cfg.l2.enabled
    n_aiv = min(2, cfg.chip.aiv_per_core)
    cross, intra = cfg.sync.cross_core_flag_cycles, cfg.sync.intra_core_flag_cycles
    tr = Traffic()
    # decode: the workspace is a per-core ring of chunk buffers (handoff.declare_workspace), rewritten in place
    ring = workspace_is_ring(t, direct)
    if ring:
        tr.dirty += len(per_core) * WORKSPACE_RING * t.k1 * t.n0 * 2
    if not l2:
        hits = set()
    elif direct:
        hits = _dequant_lockstep_hits(cfg, plan, per_core, chunks, group_k, direct=True)
    else:
        hits = _dequant_ws_hits(cfg, plan, per_core, chunks, group_k, ring, steps)
    # direct: the AIVs' int8 reads in flight together in round i, from the replay (all of them where
    # every read misses; where cores share a column range, one reader of each chunk misses)
    rounds = max(len(ct) for ct in per_core)
    q_streams = [n_aiv * len(per_core)] * rounds
    if direct and l2:
        for i in range(rounds):
            live = [c for c, ct in enumerate(per_core) if i < len(ct)]
            misses = sum((c, i, ka, "wq") not in hits for c in live for ka, _ in chunks)
            q_streams[i] = max(1, ceil(n_aiv * misses / len(chunks)))
    x_seen: set = set()
    ws_seen: set = set()   # scales read so far, by any core: the cores of a shared column range hit L2
    results = []
    for core, ct in enumerate(per_core):
        aic = _Aic(cfg, t.k0, 2, 2, "bf16", t.l0c_slots)
        aivs = _aiv_stages(n_aiv)
        slot_loop = Stage("flag:l1_slot_loop")
        produced: set = set()
        wq_seen: set = set()
        ws_in_ub: list = [None] * n_aiv   # per AIV: the column tile whose per-channel scales are in UB
        x_rows = None
        x_first = 0   # the core's first load of resident X rows
        chunk_no = 0
        for i, ((r0, r1), (c0, c1)) in enumerate(ct):
            set_round(aic.stages() + [st for a in aivs for st in a.values()] + [slot_loop], i)
            mt, nt = r1 - r0, c1 - c0
            aic.tile_start()
            a_reload = 0
            for ka, kb in chunks:
                kt = kb - ka
                mte2 = 0
                xb = 0
                if not resident:
                    xb, x_key = mt * kt * 2, (r0, ka)
                elif x_rows != (r0, r1):
                    xb, x_key = mt * k * 2, (r0, None)   # decode: X rows whole in L1, once per row tile
                    x_rows = (r0, r1)
                if xb:
                    x_hit = l2 and x_key in x_seen
                    x_seen.add(x_key)
                    tr.rd(R.ACTIVATION, xb, x_hit)
                    mte2 += gm.read(Path.GM_TO_L1, xb, True)
                    if resident:
                        a_reload = gm.read(Path.GM_TO_L1, xb, True)
                        x_first = x_first or a_reload
                    if not l2:
                        aic.hbm.add(xb)
                # the AIV pieces of this chunk (quant.dequant_pieces), each produced once per column tile
                for pa, pb in quant.dequant_pieces(plan, ka, kb, group_k):
                    if not direct and (pa, c0) in produced:
                        continue
                    pk = pb - pa
                    ai = chunk_no % n_aiv
                    a = aivs[ai]
                    chunk_no += 1
                    # direct: every tile dequantizes its chunks again, and the replay says whether the
                    # int8 piece a row tile re-reads is still in L2 (W may exceed it)
                    if direct:
                        q_hit = (core, i, ka, "wq") in hits
                    else:
                        q_hit = l2 and (pa, c0) in wq_seen
                        wq_seen.add((pa, c0))
                    s_rows = 1 if group_k is None else ceil(pb / group_k) - pa // group_k
                    s_key = (c0,) if group_k is None else (pa // group_k, c0)
                    s_hit = l2 and s_key in ws_seen
                    ws_seen.add(s_key)
                    tr.rd(R.WEIGHT, pk * nt, q_hit)
                    loads = [(pk * nt, q_hit)]
                    if group_k is not None or ws_in_ub[ai] != (c0, c1):
                        ws_in_ub[ai] = (c0, c1)
                        tr.rd(R.WEIGHT_SCALE, 4 * nt * s_rows, s_hit)
                        loads.append((4 * nt * s_rows, s_hit))
                    for nb, hit in loads:
                        if hit:
                            a["mte2"].add(gm.read(Path.GM_TO_UB, nb, True))
                        else:
                            a["mte2"].add_miss(gm.miss(Path.GM_TO_UB, nb, q_streams[i]))
                    aic.hbm.add(((0 if q_hit else pk * nt) + (0 if s_hit else 4 * nt * s_rows)))
                    a["vector"].add(program_cycles(cfg, steps, pk * nt))
                    if direct:
                        handoff = gm.on_chip(Path.UB_TO_L1, pk * nt * 2)
                        a["mte3"].add(handoff)
                    else:
                        produced.add((pa, c0))
                        tr.wr(R.WORKSPACE, pk * nt * 2, fresh=not ring)
                        a["mte3"].add(gm.write(Path.UB_TO_GM, pk * nt * 2))
                        if not l2:
                            aic.hbm.add(pk * nt * 2)
                if not direct:
                    # the bf16 chunk the AIVs wrote: in L2 unless evicted since (_dequant_ws_hits)
                    ws_hit = (core, i, ka, "ws") in hits
                    tr.rd(R.WORKSPACE, kt * nt * 2, ws_hit)
                    if ws_hit or not l2:
                        mte2 += gm.read(Path.GM_TO_L1, kt * nt * 2, True)
                    else:
                        aic.mte2.add_miss(gm.miss(Path.GM_TO_L1, kt * nt * 2, len(per_core)))
                    if not ws_hit:
                        aic.hbm.add(kt * nt * 2)
                aic.mte2.add(mte2)
                mte1 = aic.chunk(mt, kt, nt)
                if direct:
                    # an L1 B slot goes round AIV -> AIC -> AIV: UB->L1 write, cross-core flag, MTE1 reads
                    # it, cross-core flag back before the next UB->L1 write into it (b_buffers slots)
                    slot_loop.block((handoff + 2 * cross + mte1) / b_buffers, 0, 0, 1)
                    for key, v in (("aiv.mte3", handoff), ("flag", 2 * cross), ("aic.mte1", mte1)):
                        slot_loop.parts[key] = slot_loop.parts.get(key, 0) + v
            aic.tile_end(a_reload)
            tr.wr(R.OUTPUT, mt * nt * 2)
            aic.drain(gm.write(Path.L0C_TO_GM, mt * nt * 2))
            if not l2:
                aic.hbm.add(mt * nt * 2)
        # chain: AIV load -> dequant -> hand-off -> (cross flag) -> AIC load -> MTE1 -> Cube -> FixPipe
        v_chain, v_links = _aiv_chain(cfg, aivs, aic.hbm)
        if direct:
            # UB->L1 replaces the AIC's weight load: the AIC's MTE2 only carries X, beside the hand-off
            c_pos = [[aic.mte2], [aic.mte1], [aic.cube] + aic._aloop(), [aic.fixp]]
            chain = v_chain[:2] + [v_chain[2] + [aic.mte2, slot_loop]] + c_pos[1:]
            links = v_links + [cross, intra, intra]
        else:
            a_chain, a_links = aic.chain()
            a_chain[0] = [aic.mte2]
            chain = v_chain + a_chain
            links = v_links + [cross] + a_links
            # the first X load waits for nothing: it runs beside the AIVs' first piece, so it is not
            # part of the fill ahead of the AIC's MTE1 (the MTE2 stage's own busy cycles keep it)
            aic.mte2.first -= x_first
        results.append(((chain, links), aic.hbm, len(ct), len(ct) * len(chunks)))
    # the AIVs can run b_buffers chunks ahead of the AIC (its L1 weight slots; the GM workspace lets
    # them run further): a round of int8 misses (a new column tile) is averaged with the rounds that
    # re-read it from L2 within that lead
    window = 1 + b_buffers // len(chunks)
    pt, ntiles, items, core = _slowest(_timed(results, cfg, window))
    if t.tiles_m == 1:
        # decode: the chunk hand-off's own recurrence is a second lower bound (the fill of the first
        # chunk, the AIC waiting on whichever AIV has the heavier share of a tile, and the tail of small
        # chunks the AIC works through after the AIVs are done)
        # the chain depends on a core's tile shapes only (not which columns): once per distinct sequence
        shapes: dict[tuple, int] = {}
        for c, ct in enumerate(per_core):
            shapes.setdefault(tuple((r1 - r0, c1 - c0) for (r0, r1), (c0, c1) in ct), c)
        chained = max(((_handoff_chain(cfg, plan, per_core[c], chunks, group_k, steps, n_aiv * len(per_core)), c)
                       for c in shapes.values()), key=lambda x: x[0].cycles)
        if chained[0].cycles > pt.cycles:
            pt, core = chained
            ntiles, items = len(per_core[core]), len(per_core[core]) * len(chunks)
    return finish("gemm", "dequant", cfg, {"m": m, "k": k, "n": n}, [("gemm", pt)], tr,
                  tiles=ntiles, items=items, core=core,
                  plan={"tiling": _tiling(t), "handoff": "ub_to_l1" if direct else "gm_workspace",
                        "a_resident_in_l1": resident, "l1_weight_buffers": b_buffers,
                        "dequant_piece_k": plan.piece_k, **quant.share_meta(plan.share)})


def _handoff_chain(cfg: HardwareConfig, plan, ct: list, chunks: list, group_k, steps, streams: int) -> PipeTime:
    """Dequant decode on one core as a max-plus recurrence over its pieces in order (docs/formulas.md,
    "Hand-off chain"): piece j goes to AIV j mod 2, whose in-order MTE2 loads the int8 piece (and the
    scales when the column tile changes) once its UB slot of two pieces back is read, whose Vector
    dequantizes it once the out slot of two pieces back is written out, and whose MTE3 writes it into L1
    once the AIC's MTE1 has read the chunk b_buffers back (UB->L1: the piece is the chunk), or into the
    workspace ring once the AIC has read the chunk WORKSPACE_RING back (GM workspace, where the AIC's
    MTE2 reads a chunk once all its pieces are written). The AIC's MTE1 reads chunk c after it has
    landed and after chunk c - 1. Uncontended costs, except that every AIV of the chip starts together:
    the first tile's loads take their bandwidth share when it is the larger, and a column's scales miss
    L2 for the AIV with its first piece (in the simulation, for whichever AIV's load of them starts
    first). The critical path is walked back to attribute the cycles."""
    t, b = plan.tiling, plan.b_buffers
    direct = cfg.dma.ub_to_l1 is not None
    gm = Gm(cfg)
    f, fx = cfg.sync.intra_core_flag_cycles, cfg.sync.cross_core_flag_cycles
    n_aiv = min(2, cfg.chip.aiv_per_core)
    ops: list[tuple[float, str, float, int]] = []    # (end, stage key, duration, op that set its start)

    def op(key: str, dur: float, *after: tuple[float, int]) -> int:
        start, pred = max(after, default=(0.0, -1))
        ops.append((start + dur, key, dur, pred))
        return len(ops) - 1

    def at(i: int, lag: float = 0.0) -> tuple[float, int]:
        return (ops[i][0] + lag, i) if i >= 0 else (0.0, -1)

    k = chunks[-1][1]
    x = -1
    mte2, mte3 = [[-1] for _ in range(n_aiv)], [[-1] for _ in range(n_aiv)]
    first_step, last_step = [[-1] for _ in range(n_aiv)], [[-1] for _ in range(n_aiv)]
    mte1: list[int] = []
    ld: list[int] = []      # GM workspace: the AIC's read of each chunk from the ring
    scales_in_ub: list = [None] * n_aiv
    scales_seen: set = set()
    j = 0
    for i, ((r0, r1), (c0, c1)) in enumerate(ct):
        mt, nt = r1 - r0, c1 - c0
        for ka, kb in chunks:
            if x < 0 or not plan.a_resident:    # X rows once (resident in L1), else X chunk by chunk
                xb = mt * (k if plan.a_resident else kb - ka) * 2
                x = op("aic.mte2", gm.read(Path.GM_TO_L1, xb, True), at(x), at(ld[-1] if ld else -1))
            written = []
            for pa, pb in quant.dequant_pieces(plan, ka, kb, group_k):
                a, elems = j % n_aiv, (pb - pa) * nt
                lat, bw = gm.miss(Path.GM_TO_UB, elems, streams)
                # the codes slot of two chunks back is free once its program's first step has read it
                mte2[a].append(op("aiv.mte2", max(lat, bw) if i == 0 else lat, at(mte2[a][-1]),
                                  at(first_step[a][-2] if len(first_step[a]) > 1 else -1)))
                if group_k is not None or scales_in_ub[a] != c0:
                    scales_in_ub[a] = c0
                    s_key = (c0,) if group_k is None else (pa // group_k, c0)
                    nb = 4 * nt * (1 if group_k is None else ceil(pb / group_k) - pa // group_k)
                    hit = cfg.l2.enabled and s_key in scales_seen
                    scales_seen.add(s_key)
                    cyc = gm.read(Path.GM_TO_UB, nb, True) if hit else gm.miss(Path.GM_TO_UB, nb, 1)[0]
                    mte2[a].append(op("aiv.mte2", cyc, at(mte2[a][-1])))
                # one op per program step; only the last waits for the out slot of two chunks back
                v = op("aiv.vector", costs.vector_cycles(cfg, steps[0].vop, elems, steps[0].dtype),
                       at(mte2[a][-1], f), at(last_step[a][-1]))
                first_step[a].append(v)
                for n_step, st in enumerate(steps[1:], 2):
                    out_free = at(mte3[a][-2] if n_step == len(steps) and len(mte3[a]) > 1 else -1)
                    v = op("aiv.vector", costs.vector_cycles(cfg, st.vop, elems, st.dtype), at(v), out_free)
                last_step[a].append(v)
                if direct:    # into L1 slot j mod b, once the MTE1 has read the chunk b back
                    mte3[a].append(op("aiv.mte3", gm.on_chip(Path.UB_TO_L1, elems * 2), at(v, f),
                                      at(mte3[a][-1]), at(mte1[j - b] if j >= b else -1, fx)))
                else:         # into ring slot c mod R, once the AIC has read the chunk R back
                    c = len(ld)
                    mte3[a].append(op("aiv.mte3", gm.write(Path.UB_TO_GM, elems * 2), at(v, f),
                                      at(mte3[a][-1]), at(ld[c - WORKSPACE_RING] if c >= WORKSPACE_RING else -1, fx)))
                written.append(mte3[a][-1])
                j += 1
            qs = [min(t.k0, kb - q) for q in range(ka, kb, t.k0)]
            l0a = [costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0A, mt * q * 2) for q in qs]
            d1 = sum(l0a) + sum(costs.dma_cycles_uncontended(cfg, Path.L1_TO_L0B, q * nt * 2) for q in qs)
            if direct:
                landed = at(written[-1], fx)
            else:
                # the AIC reads the chunk from L2 once all its pieces are written (cross-core flag), after
                # its previous MTE2 op and once the MTE1 has read L1 slot c mod b (chunk c - b)
                c = len(ld)
                ld.append(op("aic.mte2", gm.read(Path.GM_TO_L1, (kb - ka) * nt * 2, True),
                             *(at(w, fx) for w in written), at(ld[-1] if ld else -1), at(x),
                             at(mte1[c - b] if c >= b else -1, f)))
                landed = at(ld[-1], f)
            # the chunk's first L0A read needs only X: it may run before the weights land
            mte1.append(op("aic.mte1", d1, (landed[0] - l0a[0], landed[1]),
                           at(mte1[-1] if mte1 else -1), at(x, f)))
    end = op("aic.cube", costs.mmad_cycles(cfg, mt, qs[-1], nt, "bf16"), at(mte1[-1], f))
    end = op("aic.fixp", gm.write(Path.L0C_TO_GM, mt * nt * 2), at(end, f))
    att: dict[str, float] = defaultdict(float)
    busy: dict[str, float] = defaultdict(float)
    for _, key, dur, _ in ops:
        busy[key] += dur
    i = end
    while i >= 0:
        e, key, dur, pred = ops[i]
        gap = e - dur - (ops[pred][0] if pred >= 0 else 0.0)
        att[key] += dur + min(gap, 0.0)   # an op started ahead of its predecessor's end counts from there
        att["flag"] += max(gap, 0.0)
        i = pred
    return PipeTime(ops[end][0], "flag:handoff_chain", dict(att), dict(busy))


def _dequant_ws_hits(cfg: HardwareConfig, plan, per_core: list, chunks: list, group_k, ring: bool,
                     steps) -> set[tuple]:
    """(core, round, K chunk start, "ws") of the dequant AIC's workspace reads that hit L2: l2_replay of X
    reads, the AIVs' int8 weight reads and bf16 workspace writes (each piece once per column tile), the
    AIC's workspace chunk reads and the Y writes, as model_dequant and the builder issue them.

    Order: with the decode ring the AIVs cannot get more than a ring ahead of the AIC, so lockstep order
    is the order of the run. Without it (several row tiles: the workspace holds the whole W) nothing holds
    the AIVs back: they produce every column tile's workspace at their own pace while the AIC works
    through the row tiles of the first columns, and pieces written long before they are read can be
    evicted by the ones written since. So the accesses are replayed in the order of a two-stage clock per
    core (AIVs: one piece after another, n_aiv at a time; AIC: a chunk after the previous one, and not
    before its pieces exist), priced with the uncontended Cube and Vector costs."""
    if not ring:
        return l2_replay_timed(cfg, _dequant_timed_events(cfg, plan, per_core, chunks, group_k, steps))
    return _dequant_lockstep_hits(cfg, plan, per_core, chunks, group_k, direct=False)


def _dequant_lockstep_hits(cfg: HardwareConfig, plan, per_core: list, chunks: list, group_k,
                           direct: bool) -> set[tuple]:
    """l2_replay of a dequant schedule in lockstep order: X reads, the AIVs' int8 piece reads (UB->L1:
    every tile dequantizes its chunks again, and the L1 weight slots hold the AIVs to a few chunks ahead;
    GM workspace ring: once per column tile, with the bf16 piece written to the workspace and the AIC's
    chunk read from it) and the Y writes. Returns {(core, round, K chunk start, tag)} of the reads that
    hit ("wq" for the int8 pieces, "ws" for the workspace chunks)."""
    k = chunks[-1][1]
    produced = [set() for _ in per_core]
    x_rows = [None] * len(per_core)

    def chunk(core, i, tile, ka, kb):
        (r0, r1), (c0, c1) = tile
        mt, nt, kt = r1 - r0, c1 - c0, kb - ka
        if not plan.a_resident:
            yield "x", ("x", ((r0, r1), (ka, kb))), mt * kt * 2, False
        elif x_rows[core] != (r0, r1):   # decode: X rows whole in L1, once per row tile
            x_rows[core] = (r0, r1)
            yield "x", ("x", ((r0, r1), (0, k))), mt * k * 2, False
        for pa, pb in quant.dequant_pieces(plan, ka, kb, group_k):
            if direct:
                yield "wq", ("wq", ((pa, pb), (c0, c1))), (pb - pa) * nt, False
                continue
            if (pa, c0) in produced[core]:
                continue
            produced[core].add((pa, c0))
            yield "wq", ("wq", ((pa, pb), (c0, c1))), (pb - pa) * nt, False
            yield "ws_write", ("ws", ((pa, pb), (c0, c1))), (pb - pa) * nt * 2, True
        if not direct:
            yield "ws", ("ws", ((ka, kb), (c0, c1))), kt * nt * 2, False

    def tile_end(core, i, tile):
        (r0, r1), (c0, c1) = tile
        yield "y", ("y", ((r0, r1), (c0, c1))), (r1 - r0) * (c1 - c0) * 2, True

    # direct: a chunk is one piece, and the core's AIVs take them in turn (model_dequant's chunk_no)
    lanes = {"wq": min(2, cfg.chip.aiv_per_core)} if direct else None
    return l2_replay(cfg, per_core, chunks, chunk, tile_end, lanes=lanes)


def _dequant_timed_events(cfg: HardwareConfig, plan, per_core: list, chunks: list, group_k, steps) -> list:
    """(time, core, round, K chunk start, accesses) of a dequant run without the ring (_dequant_ws_hits)."""
    k = chunks[-1][1]
    n_aiv = min(2, cfg.chip.aiv_per_core)
    hbm_share = cfg.hbm_bytes_per_cycle / len(per_core)
    n = max(c1 for ct in per_core for _, (_, c1) in ct)
    piece_hbm = 3 if k * n * 2 > cfg.l2.capacity_bytes else 1
    events = []
    for core, ct in enumerate(per_core):
        aiv_free = [0.0] * n_aiv
        ready: dict = {}      # (pa, c0) -> cycle its bf16 piece is in the workspace
        n_piece = 0
        hbm_free = 0.0
        t_aic = 0.0
        x_rows = None
        for i, ((r0, r1), (c0, c1)) in enumerate(ct):
            mt, nt = r1 - r0, c1 - c0
            if (chunks[0][0], c0) not in ready:
                # the AIVs run ahead: this column tile's pieces follow the previous ones at once
                for ka, kb in chunks:
                    for pa, pb in quant.dequant_pieces(plan, ka, kb, group_k):
                        a = n_piece % n_aiv
                        n_piece += 1
                        # the int8 piece comes from HBM at this core's share of the bandwidth (and
                        # its bf16 copy goes back to HBM when the workspace outgrows L2)
                        hbm_free += (pb - pa) * nt * piece_hbm / hbm_share
                        aiv_free[a] = max(aiv_free[a], hbm_free) + program_cycles(cfg, steps, (pb - pa) * nt)
                        ready[(pa, c0)] = aiv_free[a]
                        events.append((aiv_free[a], core, i, ka, (
                            ("wq", ("wq", ((pa, pb), (c0, c1))), (pb - pa) * nt, False),
                            ("ws_write", ("ws", ((pa, pb), (c0, c1))), (pb - pa) * nt * 2, True))))
            for ka, kb in chunks:
                kt = kb - ka
                need = max(ready[(pa, c0)] for pa, _ in quant.dequant_pieces(plan, ka, kb, group_k))
                t_aic = max(t_aic, need) + costs.mmad_cycles(cfg, mt, kt, nt, "bf16")
                acc = []
                if not plan.a_resident:
                    acc.append(("x", ("x", ((r0, r1), (ka, kb))), mt * kt * 2, False))
                elif x_rows != (r0, r1):
                    x_rows = (r0, r1)
                    acc.append(("x", ("x", ((r0, r1), (0, k))), mt * k * 2, False))
                acc.append(("ws", ("ws", ((ka, kb), (c0, c1))), kt * nt * 2, False))
                events.append((t_aic, core, i, ka, tuple(acc)))
            events.append((t_aic, core, i, None, (("y", ("y", ((r0, r1), (c0, c1))), mt * nt * 2, True),)))
    return events


def _msd_w_hits(cfg: HardwareConfig, plan, p: int, per_core: list, chunks: list, row_blocks: list, pieces: list,
                direct_out: bool) -> set[tuple]:
    """(core, round, K chunk start, "w") of the MSD AIC's weight reads that hit L2 (l2_replay of the stacked
    A written in phase 1 and read per row block or per chunk, the int8 W chunks, the int32 partials and the
    Y writes, as model_msd and the builder issue them)."""
    k = chunks[-1][1]
    a_rows = [None] * len(per_core)
    before = [(("xa", ((0, p), rb, pc)), p * (rb[1] - rb[0]) * (pc[1] - pc[0])) for rb in row_blocks for pc in pieces]

    def chunk(core, i, tile, ka, kb):
        (r0, r1), (c0, c1) = tile
        mt, nt, kt = r1 - r0, c1 - c0, kb - ka
        if not plan.a_resident:
            yield "a", ("xa", ((0, p), (r0, r1), (ka, kb))), p * mt * kt, False
        elif a_rows[core] != (r0, r1):
            a_rows[core] = (r0, r1)
            yield "a", ("xa", ((0, p), (r0, r1), (0, k))), p * mt * k, False
        yield "w", ("wq", ((ka, kb), (c0, c1))), kt * nt, False

    def tile_end(core, i, tile):
        (r0, r1), (c0, c1) = tile
        mt, nt = r1 - r0, c1 - c0
        if not direct_out:
            # the AIVs read it back at once: the write has just made it the most recent line
            yield "part", ("part", ((0, p), (r0, r1), (c0, c1))), p * mt * nt * 4, True
        yield "y", ("y", ((r0, r1), (c0, c1))), mt * nt * 2, True

    return l2_replay(cfg, per_core, chunks, chunk, tile_end, before)


# ---- MSD ---------------------------------------------------------------------------------------------

@register("gemm", "msd")
def model_msd(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None, passes: int = 2,
              w_overlap: bool | None = None, **_) -> ModelResult:
    """w_overlap: take the overlapped form of the AIC's W misses (True) or the lockstep form (False)
    rather than the rule of docs/formulas.md, section 1 (None); verify uses it to bound a miss."""
    quant.check_method(cfg, "msd", "int8", passes)
    cores = check_shape(cfg, m, k, n, cores)
    p = passes
    direct_out = cfg.dma.l0c_to_ub is not None
    # the builder's own choices: tiling, resident A, decomposition pieces, recombination rows
    plan = quant.msd_plan(cfg, m, k, n, cores, p)
    t, resident, piece, rc = plan.tiling, plan.a_resident, plan.piece, plan.recombine_rows
    pieces = split(k, piece)
    npc = len(pieces)
    l2 = cfg.l2.enabled
    n_aiv = min(2, cfg.chip.aiv_per_core)
    cross = cfg.sync.cross_core_flag_cycles
    per_core = assign_tiles(m, n, t, cores, "columns", plan.share)
    gm = Gm(cfg)
    tr = Traffic()
    row_blocks = split(m, t.m0)
    all_aivs = [Unit(c, f"aiv{i}") for c in range(cores) for i in range(n_aiv)]
    gm1 = gm

    # Phase 1 (every AIV of the chip, work items round robin): partial row max, barrier, decompose.
    work = [(rb, pc) for rb in row_blocks for pc in pieces]
    a_max = [_aiv_stages(1)[0] for _ in all_aivs]
    a_dec = [_aiv_stages(1)[0] for _ in all_aivs]
    hbm1 = [Stage("hbm") for _ in all_aivs]
    steps_dec = (MSD_ABSMAX[0],) + msd_decompose_steps(p)
    for i, ((r0, r1), (pa, pb)) in enumerate(work):
        rows, kt = r1 - r0, pb - pa
        j = i % len(all_aivs)
        tr.rd(R.ACTIVATION, rows * kt * 2, False)
        a_max[j]["mte2"].add_miss(gm1.miss(Path.GM_TO_UB, rows * kt * 2, min(len(work), len(all_aivs))))
        hbm1[j].add(rows * kt * 2)
        a_max[j]["vector"].add(program_cycles(cfg, MSD_ABSMAX, rows * kt))
        tr.wr(R.WORKSPACE, rows * 4)
        a_max[j]["mte3"].add(gm1.write(Path.UB_TO_GM, rows * 4))
        tr.rd(R.WORKSPACE, npc * rows * 4, True)
        tr.rd(R.ACTIVATION, rows * kt * 2, True)
        a_dec[j]["mte2"].add(gm1.read(Path.GM_TO_UB, npc * rows * 4, True) + gm1.read(Path.GM_TO_UB, rows * kt * 2, True))
        a_dec[j]["vector"].add(costs.vector_cycles(cfg, "reduce_max", npc * rows, "fp32")
                               + program_cycles(cfg, steps_dec, rows * kt))
        tr.wr(R.WORKSPACE, p * rows * kt)
        a_dec[j]["mte3"].add(gm1.write(Path.UB_TO_GM, p * rows * kt))
        if not l2:
            hbm1[j].add(rows * 4 + npc * rows * 4 + rows * kt * 2 + p * rows * kt)
    ph1 = []
    _hbm_shared(hbm1, cfg.hbm_bytes_per_cycle)
    for j in range(len(all_aivs)):
        c1, l1 = _aiv_chain(cfg, [a_max[j]], hbm1[j])
        c2, l2_ = _aiv_chain(cfg, [a_dec[j]])
        ph1.append((pipeline(c1, l1), pipeline(c2, l2_)))
    p1a, p1b = max(ph1, key=lambda x: x[0].cycles + x[1].cycles)
    barrier = PipeTime(cross, "flag", {"flag": cross}, {})

    # Phase 2 + 3 per core: int8 Cube on the stacked passes, partials, recombination on the core's AIVs.
    steps_post = msd_recombine_steps(p)
    chunks = k_chunks(k, t.k1, t.k0)
    results = []
    # columns partition, rows inner: a core re-reads its columns' W for every row block; which reads hit
    # L2 is found by replaying the schedule's GM accesses (_msd_w_hits)
    hits = _msd_w_hits(cfg, plan, p, per_core, chunks, row_blocks, pieces, direct_out) if l2 else set()
    streams = [sum(1 for c, ct in enumerate(per_core) if i < len(ct) and (c, i, chunks[0][0], "w") not in hits)
               for i in range(max(len(ct) for ct in per_core))]
    w_streams = _w_streams(cfg, k * n, per_core, chunks, hits) if w_overlap is None else w_overlap
    ws_seen: set = set()   # scales read so far, by any core: the cores of a shared column range hit L2
    for core, ct in enumerate(per_core):
        aic = _Aic(cfg, t.k0, 1, 1, "int8", t.l0c_slots)
        # int8 W larger than L2: streamed from HBM for the whole kernel, as native's (docs/formulas.md 1)
        aic.mte2.overlap = w_streams
        aivs = _aiv_stages(n_aiv)
        a_rows_loaded = None
        n_rec = 0
        for i, ((r0, r1), (c0, c1)) in enumerate(ct):
            set_round(aic.stages() + [st for a in aivs for st in a.values()], i)
            mt, nt = r1 - r0, c1 - c0
            mte2_a = 0
            aic.tile_start()
            if resident and a_rows_loaded != (r0, r1):
                tr.rd(R.WORKSPACE, p * mt * k, True)
                mte2_a += gm.read(Path.GM_TO_L1, p * mt * k, True)
                if not l2:
                    aic.hbm.add(p * mt * k)
                a_rows_loaded = (r0, r1)
            for j, (ka, kb) in enumerate(chunks):
                kt = kb - ka
                w_hit = (core, i, ka, "w") in hits
                tr.rd(R.WEIGHT, kt * nt, w_hit)
                miss = None
                if w_hit:
                    mte2 = gm.read(Path.GM_TO_L1, kt * nt, True) + (mte2_a if j == 0 else 0)
                else:
                    mte2 = mte2_a if j == 0 else 0
                    miss = gm.miss(Path.GM_TO_L1, kt * nt, streams[i])
                    aic.mte2.add_miss(miss)
                aic.hbm.add((0 if w_hit else kt * nt))
                if not resident:
                    tr.rd(R.WORKSPACE, p * mt * kt, True)
                    mte2 += gm.read(Path.GM_TO_L1, p * mt * kt, True)
                    if not l2:
                        aic.hbm.add(p * mt * kt)
                aic.mte2.add(mte2)
                aic.l1_slots(mte2 if miss is None else aic.with_miss(mte2, miss), p * mt, kt, nt)
                aic.chunk(p * mt, kt, nt)
            aic.tile_end(mte2_a)
            if not direct_out:
                tr.wr(R.PARTIAL, p * mt * nt * 4)
                aic.drain(gm.write(Path.L0C_TO_GM, p * mt * nt * 4))
            for ra, rb in split(mt, rc):
                rows = rb - ra
                a = aivs[n_rec % n_aiv]
                n_rec += 1
                if direct_out:
                    aic.drain(gm.on_chip(Path.L0C_TO_UB, p * rows * nt * 4))
                s_hit = l2 and c0 in ws_seen
                ws_seen.add(c0)
                tr.rd(R.WEIGHT_SCALE, nt * 4, s_hit)
                tr.rd(R.WORKSPACE, npc * rows * 4, True)
                ld = gm.read(Path.GM_TO_UB, nt * 4, s_hit) + gm.read(Path.GM_TO_UB, npc * rows * 4, True)
                if not direct_out:
                    tr.rd(R.PARTIAL, p * rows * nt * 4, True)
                    ld += gm.read(Path.GM_TO_UB, p * rows * nt * 4, True)
                a["mte2"].add(ld)
                a["vector"].add(costs.vector_cycles(cfg, "reduce_max", npc * rows, "fp32")
                                + program_cycles(cfg, steps_post, p * rows * nt))
                tr.wr(R.OUTPUT, rows * nt * 2)
                a["mte3"].add(gm.write(Path.UB_TO_GM, rows * nt * 2))
                if not l2:
                    aic.hbm.add(nt * 4 + npc * rows * 4 + rows * nt * 2 + (0 if direct_out else 2 * p * rows * nt * 4))
        a_chain, a_links = aic.chain()
        v_chain, v_links = _aiv_chain(cfg, aivs)
        results.append(((a_chain + v_chain, a_links + [cross] + v_links), aic.hbm, len(ct), len(ct) * len(chunks)))
    pt, ntiles, items, core = _slowest(_timed(results, cfg))
    # The AIC loads its first two W chunks before the decomposition is done (quant._build_msd, first_w):
    # that much of the GEMM phase overlaps phase 1.
    ct0 = per_core[core][0]
    nt0 = ct0[1][1] - ct0[1][0]
    pre = [gm.miss(Path.GM_TO_L1, (kb - ka) * nt0, streams[0]) for ka, kb in chunks[:2]]
    prefetch = max(sum(a for a, _ in pre), sum(b for _, b in pre))
    # The AIC waits only for its row block's pieces (load_a's deps) and the work items are dealt row block
    # by row block, so the decomposition of row block b need only be done when the first core reaches its
    # first tile of b (tile b of its first column; b // s where s cores share a column range): the phase is
    # exposed only as far as it runs behind that.
    first_tile: dict = {}
    for ct in per_core:
        for idx, (rb, _) in enumerate(ct):
            first_tile[rb] = min(first_tile.get(rb, idx), idx)
    per_wave = p1b.cycles / ceil(len(work) / len(all_aivs))
    tile_cycles = pt.cycles / max(1, ntiles)
    exposed = max(ceil((b + 1) * npc / len(all_aivs)) * per_wave - first_tile[rb] * tile_cycles
                  for b, rb in enumerate(row_blocks))
    exposed = min(p1b.cycles, exposed)
    scale = exposed / p1b.cycles if p1b.cycles else 0
    p1b = PipeTime(exposed, p1b.bound, {k_: v * scale for k_, v in p1b.attribution.items()}, p1b.busy)
    overlap = min(prefetch, p1a.cycles + cross + p1b.cycles + cross)
    phases = [("decompose.max", p1a), ("barrier", barrier), ("decompose", p1b),
              ("handoff", PipeTime(cross, "flag", {"flag": cross}, {})), ("gemm+recombine", pt),
              ("w_prefetch_overlap", PipeTime(-overlap, "aic.mte2", {"aic.mte2": -overlap}, {}))]
    return finish("gemm", "msd", cfg, {"m": m, "k": k, "n": n, "passes": p}, phases, tr,
                  tiles=ntiles, items=items, core=core,
                  plan={"tiling": _tiling(t), "partials": "l0c_to_ub" if direct_out else "gm_workspace",
                        "a_resident_in_l1": resident, "decompose_piece_k": piece, "recombine_rows": rc,
                        **quant.share_meta(plan.share)})


def model_gemm(cfg: HardwareConfig, m: int, k: int, n: int, method: str, *, weights: str | None = None,
               passes: int = 2, cores: int | None = None) -> ModelResult:
    """The model of one GEMM, with the same arguments as npusim.kernels.gemm.quant.build_gemm."""
    if method == "native":
        return model_native(cfg, m, k, n, cores)
    if method == "dequant":
        return model_dequant(cfg, m, k, n, cores, weights=weights or "int8")
    if method == "msd":
        return model_msd(cfg, m, k, n, cores, passes=passes)
    from npusim.errors import NpusimError
    raise NpusimError(f"no closed-form GEMM model for --method {method} (native, dequant, msd)")
