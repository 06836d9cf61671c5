"""Quantized-weight GEMM schedules: the dequant baseline and Multi-Scale Dequant (DESIGN.md 4.1, 4.2).

Y (M x N, bf16) = X (M x K, bf16) @ W, W int8 per output channel (or per group of 128 along K).

dequant: for every weight piece (up to piece_k x n0, sized from UB) an AIV loads the int8 codes and
  scales into UB, runs the DEQUANT vector program (int8 -> fp32, x scale, -> bf16) and hands the bf16
  piece to the AIC: through a GM workspace (MTE3 write; the AIC's MTE2 reads back a whole L1 chunk of
  k1 x n0, sized from L1, once every piece it covers is written) or, where the part has it, straight into
  L1 (UB->L1, a piece per chunk). The AIC then runs a bf16 GEMM with fp32 accumulation. Vector work
  ~ K x N, whatever M is.
msd: the AIVs decompose X once into `passes` int8 components per row (MSD_ABSMAX and the decompose
  program), written to a GM workspace as (passes, M, K); each AIC multiplies the stacked passes
  (passes x M rows) by the raw int8 weights on the int8 Cube, int32 accumulation, and FixPipe writes the
  int32 partials to a workspace (or straight to UB on a part with L0C->UB); an AIV recombines them in fp32
  with the row and channel scales and writes bf16 Y. Vector work ~ passes x M x (K + N).

Output tiles are dealt to cores by column range (tiling.assign_tiles, "columns": all row tiles of a
column block on one core), so the dequantized weights of a column block are produced once and, for
M > m0, re-read from the workspace. Where every row tile reads int8 W again (MSD; dequant with UB->L1,
which dequantizes each tile's chunks anew) and the W of a round of tiles does not fit L2, cores share a
column range and take its row tiles in turn (tiling.l2_share): L2 blocking along N.
The two AIVs of a core take alternate chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Callable

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Buffer, GmRef, Path, Role, Unit
from npusim.hw import costs
from npusim.kernels.gemm.aiv_side import AivSide
from npusim.kernels.gemm.cube_loop import CubeLoop
from npusim.kernels.gemm.handoff import WeightHandoff, declare_workspace
from npusim.kernels.gemm.mx_schedules import build_gemm_mx, check_mx_method
from npusim.kernels.gemm.native import COPY, TO_BF16, build_gemm_native, check_shape, tiling_meta
from npusim.kernels.gemm.programs import (DEQUANT, MSD_ABSMAX, emit_program, msd_decompose_steps, msd_recombine_steps,
                                          program_cycles)
from npusim.kernels.gemm.tiling import (M0_CHOICES, GemmTiling, assign_tiles, choose_gemm_tiling, k_chunks, l2_share,
                                       split, split_range)
from npusim.numerics.msd import int32_safe_k

WEIGHTS = ("bf16", "int8", "int8-g128", "mxfp4")
METHODS = ("native", "dequant", "msd", "direct")
GROUP_K = 128
# UB bytes per weight element a dequant chunk needs: int8 codes in, an fp32 temporary, bf16 out.
DEQUANT_UB_BYTES_PER_ELEMENT = 1 + 4 + 2
PIECE_ALIGN = 16  # K rows an AIV dequant piece is a multiple of (per-channel scales; per group: the group)


def check_method(cfg: HardwareConfig, method: str, weights: str, passes: int) -> None:
    if weights not in WEIGHTS:
        raise GraphError(f"--weights {weights!r}: choose one of {', '.join(WEIGHTS)}")
    if method not in METHODS:
        raise GraphError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "native" and weights != "bf16":
        raise GraphError(f"--method native multiplies bf16 weights; {weights} weights need --method dequant or msd")
    if method != "native" and weights == "bf16":
        raise GraphError(f"--method {method} needs quantized weights (--weights int8, int8-g128 or mxfp4)")
    if method == "msd" and weights == "int8-g128":
        raise GraphError("--method msd takes per-channel int8 weights (--weights int8): with per-group scales "
                         "the int32 partials would have to be recombined per group of 128")
    if weights == "mxfp4":
        check_mx_method(cfg, method, passes)
        return
    if method == "direct":
        raise GraphError("--method direct (single-pass MXFP8 activations) takes --weights mxfp4")
    if not 1 <= passes <= 4:
        raise GraphError(f"--passes {passes}: MSD takes 1 to 4 passes")


def build_gemm(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None, method: str = "native",
               weights: str = "bf16", passes: int = 2, tiling: GemmTiling | None = None) -> KernelGraph:
    """`tiling` overrides the AIC tiling the builder would choose (to compare methods on equal tiles)."""
    check_method(cfg, method, weights, passes)
    if method == "native":
        return build_gemm_native(cfg, m, k, n, cores, tiling)
    if weights == "mxfp4":
        return build_gemm_mx(cfg, m, k, n, cores, method, passes, tiling)
    cores = check_shape(cfg, m, k, n, cores)
    group_k = GROUP_K if weights == "int8-g128" else None
    if group_k and k % group_k:
        raise GraphError(f"--weights int8-g128 needs K a multiple of {group_k} (K = {k})")
    if method == "dequant":
        return _build_dequant(cfg, m, k, n, cores, weights, group_k, tiling)
    if k > int32_safe_k():
        raise GraphError(f"K = {k} exceeds the int32-safe accumulation depth {int32_safe_k()} of int8 MSD")
    return _build_msd(cfg, m, k, n, cores, passes, tiling)


def _weight_tensors(g: KernelGraph, k: int, n: int, group_k: int | None) -> None:
    std = 1.0 / max(1.0, k) ** 0.5
    base = {"kind": "quant_int", "source": "w_float", "bits": 8, "group_k": group_k, "shape": (k, n), "std": std}
    g.tensor("wq", (k, n), "int8", Role.WEIGHT, {**base, "part": "q"})
    g.tensor("ws", (n,) if group_k is None else (k // group_k, n), "fp32", Role.WEIGHT_SCALE,
             {**base, "part": "scale"})


# ---- plans: the sizes a schedule picks, public so the closed-form models use the very same choices ---------

@dataclass(frozen=True)
class DequantPlan:
    tiling: GemmTiling
    a_resident: bool      # X (M x K bf16) kept whole in L1, loaded once per row tile
    b_buffers: int        # L1 slots for dequantized weight chunks
    ub_chunk_elements: int  # the largest weight piece the AIV's UB takes
    piece_k: int          # K rows of the largest AIV dequant piece (dequant_pieces cuts each L1 chunk)
    share: int = 1        # cores per column range (tiling.l2_share)


def dequant_plan(cfg: HardwareConfig, m: int, k: int, n: int, cores: int, group_k: int | None,
                 tiling: GemmTiling | None = None) -> DequantPlan:
    """The AIC's L1 chunk (k1 x n0) and the AIVs' dequant piece are sized separately: k1 from L1 and the
    cost estimate (as the bf16 GEMM sizes it, with the AIVs' time as a floor and the last chunk's drain),
    the piece from UB. Through a GM workspace one AIC read (GM -> L1) then takes a whole chunk that
    several AIV pieces wrote (pieces along K, n0 wide). With a direct UB -> L1 hand-off each piece lands in
    the AIC's L1 slot as its whole chunk, so there the chunk is the piece."""
    # elements per weight piece: double-buffered codes, temporary and output, after room for the scales
    # (fp32, per channel: n0 <= 512 of them; per group: up to 8 groups of 128 per piece)
    scale_room = 2 * 4 * 512 * (8 if group_k else 1)
    ub_cap = (cfg.buffers.ub_bytes - scale_room) // (2 * DEQUANT_UB_BYTES_PER_ELEMENT)
    align = group_k or PIECE_ALIGN
    direct = cfg.dma.ub_to_l1 is not None
    # Decode: X stays whole in L1 when it fits in half of it.
    m16 = ceil(m / 16) * 16
    resident = m16 * k * 2 <= cfg.buffers.l1_bytes // 2
    common = dict(k1_multiple=group_k or 1, partition="columns", a_resident_bytes=m16 * k * 2 if resident else 0)
    if direct:
        t = tiling or choose_gemm_tiling(cfg, m, k, n, cores, max_b_chunk_elements=ub_cap, **common)
        piece_k = t.k1
    else:
        # a piece is at least `align` rows of K by n0 columns
        t = tiling or choose_gemm_tiling(cfg, m, k, n, cores, max_n0=ub_cap // align // 16 * 16,
                                         b_producer=_dequant_producer(cfg, k, n, cores, ub_cap, group_k), **common)
        piece_k = _piece_k(t.k1, t.n0, ub_cap, align)
    if piece_k < 1 or piece_k * t.n0 > ub_cap:
        raise GraphError(f"dequant on {m}x{k}x{n}: a weight piece of {max(piece_k, align)} x {t.n0} does not fit "
                         f"the {cfg.buffers.ub_bytes} B UB of {cfg.meta.name} (at most {ub_cap} elements)")
    # A direct UB->L1 hand-off couples the AIVs to the AIC's L1 slots (a GM workspace does not): more
    # weight slots let the AIVs run ahead as far as L1 allows.
    b_buffers, share = 2, 1
    if direct:
        a_l1 = m16 * k * 2 if resident else 2 * t.m0 * t.k1 * 2
        b_buffers = max(2, min(8, (cfg.buffers.l1_bytes - a_l1) // (t.k1 * t.n0 * 2)))
        # every row tile dequantizes its chunks again from the int8 codes, so cores can share a column
        # range at no extra vector work (through a GM workspace, its producer would have to be shared)
        share = l2_share(cfg, t, m, k, n, cores, 1, 0 if resident else t.m0 * k * 2)
    return DequantPlan(t, resident, b_buffers, ub_cap, piece_k, share)


def share_meta(share: int) -> dict:
    """The plan's cores per column range, recorded where cores share one (runs from before L2 blocking
    had one core per range and no such field, so their records still match the plan)."""
    return {"cores_per_column_range": share} if share > 1 else {}


def _piece_k(k1: int, n0: int, ub_cap: int, align: int) -> int:
    """K rows of the largest AIV piece: as many as the UB takes, on `align` boundaries, at most a chunk."""
    return min(k1, ub_cap // n0 // align * align)


def _dequant_producer(cfg: HardwareConfig, k: int, n: int, cores: int, ub_cap: int,
                      group_k: int | None) -> Callable[[int, int], float]:
    """Cycles one core's AIVs take to dequantize its columns of W in pieces of a tiling (n0, k1): the
    slowest of an AIV's weight loads (latency-bound, or HBM-bandwidth-bound with every AIV streaming),
    its vector program and its workspace writes. choose_gemm_tiling weighs it against the AIC's time."""
    steps = DEQUANT["int8-g128" if group_k else "int8"]
    align = group_k or PIECE_ALIGN
    n_aiv = min(2, cfg.chip.aiv_per_core)
    cols = ceil(ceil(n / 16) / cores) * 16          # a core's columns (assign_tiles, "columns")
    ld, st = costs.port(cfg, Path.GM_TO_UB), costs.port(cfg, Path.UB_TO_GM)
    hbm = cfg.hbm_bytes_per_cycle
    wr_rate = min(st.rate_bytes_per_cycle, cfg.l2.write_rate_bytes_per_cycle if cfg.l2.enabled else hbm)
    loads = 1 if group_k is None else 2             # codes, and per group the piece's scales
    memo: dict[tuple[int, int], float] = {}

    def producer(n0: int, k1: int) -> float:
        if (n0, k1) not in memo:
            piece = _piece_k(k1, n0, ub_cap, align)
            if piece < 1:
                memo[(n0, k1)] = float("inf")
            else:
                nt = min(n0, cols)
                # as dequant_pieces cuts them: each L1 chunk into equal pieces of at most `piece` rows
                per_chunk = ceil(min(k1, k) / piece)
                per_aiv = ceil(ceil(k / k1) * per_chunk * ceil(cols / n0) / n_aiv)
                e = ceil(min(k1, k) / per_chunk) * nt
                lat = per_aiv * (loads * (ld.start_cycles + cfg.hbm.first_byte_cycles)
                                 + costs.transfer_cycles(e, min(ld.rate_bytes_per_cycle, hbm)))
                bw = per_aiv * e * cores * n_aiv / hbm
                vec = per_aiv * program_cycles(cfg, steps, e)
                out = per_aiv * (st.start_cycles + costs.transfer_cycles(2 * e, wr_rate))
                memo[(n0, k1)] = max(lat, bw, vec, out)
        return memo[(n0, k1)]
    return producer


def dequant_pieces(plan: DequantPlan, ka: int, kb: int, group_k: int | None) -> list[tuple[int, int]]:
    """The AIV pieces of the L1 chunk [ka, kb): as few as the UB allows, equal, on `align` boundaries
    (group boundaries with per-group scales), the last one shorter if need be."""
    align = group_k or PIECE_ALIGN
    kt = kb - ka
    d = ceil(kt / plan.piece_k)
    step = min(plan.piece_k, ceil(kt / d / align) * align)
    return split_range(ka, kb, step)


@dataclass(frozen=True)
class MsdPlan:
    tiling: GemmTiling
    a_resident: bool     # the stacked passes (passes x M x K int8) kept whole in L1
    piece: int           # K elements per decomposition piece
    recombine_rows: int  # output rows per recombination step
    share: int = 1       # cores per column range (tiling.l2_share)


def msd_ub_bytes(m0: int, n0: int, k: int, passes: int, piece: int, rc: int) -> tuple[int, int]:
    """UB bytes of an AIV's (decomposition, recombination) slots, all double-buffered."""
    decompose = 2 * m0 * piece * _msd_ub_per_element(passes) + 2 * 4 * m0 * ceil(k / piece)
    recombine = 2 * passes * rc * n0 * 8 + 2 * 4 * n0 + 2 * 2 * rc * n0
    return decompose, recombine


MSD_ONE_ROW_TILE_MAX_M = 64


def msd_plan(cfg: HardwareConfig, m: int, k: int, n: int, cores: int, passes: int,
             tiling: GemmTiling | None = None) -> MsdPlan:
    p = passes
    m16 = ceil(m / 16) * 16
    resident = p * m16 * k <= cfg.buffers.l1_bytes // 2
    # Up to 64 tokens MSD keeps all rows in one tile, so each int8 weight byte streams from HBM once (its
    # point at decode). The estimate prices a second row tile's weights from L2 and would otherwise split
    # M = 17..64 into tiles of 16, re-reading W for the second half.
    # The AIVs keep each tile row's maximum for every decomposition piece of K, so for a long K a tall
    # tile may leave no room in UB: then the tiling is chosen again among shorter row tiles.
    max_m0 = None
    while True:
        t = tiling or choose_gemm_tiling(cfg, m, k, n, cores, a_dtype="int8", b_dtype="int8", out_dtype="int32",
                                         a_row_factor=p, partition="columns",
                                         a_resident_bytes=p * m16 * k if resident else 0,
                                         min_m0=m16 if m16 <= MSD_ONE_ROW_TILE_MAX_M and max_m0 is None else 0,
                                         max_m0=max_m0)
        fit = _msd_pieces(cfg, t, m, k, p)
        if fit is not None:
            return MsdPlan(t, resident, *fit, l2_share(cfg, t, m, k, n, cores, 1, 0 if resident else p * t.m0 * k))
        if tiling is not None or t.m0 <= 16:
            raise GraphError(f"MSD-{p} on {m}x{k}x{n}: no decomposition piece fits the {cfg.buffers.ub_bytes} B UB "
                             f"of {cfg.meta.name} beside the recombination slots (tile {t.m0}x{t.n0})")
        max_m0 = max(c for c in M0_CHOICES if c < t.m0)


def _msd_pieces(cfg: HardwareConfig, t: GemmTiling, m: int, k: int, p: int) -> tuple[int, int] | None:
    """(decomposition piece, recombination rows) for tiling t, or None if no piece fits the UB."""
    ub = cfg.buffers.ub_bytes
    # Recombination: up to half a tile's rows (both AIVs share each tile), fewer if the UB is short.
    rc = max(1, ceil(min(t.m0, m) / 2))
    # Decomposition pieces: power-of-two shares of the K chunk. Prefer the largest that fits in half the
    # UB (the other half holds the recombination slots), which keeps pieces small enough to spread the
    # decomposition over many AIVs; else the largest that fits beside the recombination slots at all
    # (smaller pieces need more per-piece row-maximum slots, so the smallest is not always the best fit).
    candidates = [t.k1 >> i for i in range(8) if (t.k1 >> i) >= 16] or [t.k1]
    fits = [pc for pc in candidates if max(msd_ub_bytes(t.m0, t.n0, k, p, pc, rc)) <= ub // 2]
    while not fits:
        fits = [pc for pc in candidates if sum(msd_ub_bytes(t.m0, t.n0, k, p, pc, rc)) <= ub]
        if fits or rc == 1:
            break
        rc = max(1, rc // 2)
    return (fits[0], rc) if fits else None


# ---- dequant ------------------------------------------------------------------------------------------

def _build_dequant(cfg, m, k, n, cores, weights, group_k, tiling=None) -> KernelGraph:
    direct = cfg.dma.ub_to_l1 is not None
    plan = dequant_plan(cfg, m, k, n, cores, group_k, tiling)
    t, resident, b_buffers = plan.tiling, plan.a_resident, plan.b_buffers
    g = KernelGraph(name=f"gemm_dequant_{weights}_{m}x{k}x{n}")
    g.meta = {"kernel": "gemm", "method": "dequant", "weights": weights, "m": m, "k": k, "n": n, "cores": cores,
              "handoff": "ub_to_l1" if direct else "gm_workspace", "a_resident_in_l1": resident,
              "tiling": tiling_meta(t), "dequant_piece_k": plan.piece_k, **share_meta(plan.share)}
    g.tensor("x", (m, k), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
    _weight_tensors(g, k, n, group_k)
    g.tensor("y", (m, n), "bf16", Role.OUTPUT)
    per_core = assign_tiles(m, n, t, cores, "columns", plan.share)
    ring = declare_workspace(g, t, k, n, len(per_core), direct)
    g.reference = {"fn": "gemm_dequant_int", "inputs": ["x", "wq", "ws"], "output": "y",
                   "kwargs": {"group_k": group_k}, "truth": "gemm_fp64_int"}
    steps = DEQUANT[weights]
    k1_chunks = k_chunks(k, t.k1, t.k0, group_k or 1)
    g.meta["l1_weight_buffers"] = b_buffers
    for core, tiles in enumerate(per_core):
        aic = Unit(core, "aic")
        loop = CubeLoop(g, aic, t, a_rows=t.m0, a_dtype="bf16", b_dtype="bf16", a_resident_k=k if resident else None,
                        b_buffers=b_buffers)
        aivs = [_DequantAiv(g, Unit(core, f"aiv{i}"), plan.piece_k, t.n0, group_k, steps)
                for i in range(min(2, cfg.chip.aiv_per_core))]
        handoff = WeightHandoff(g, aic, aivs, direct, ring)
        x_rows, la = None, -1
        for (r0, r1), (c0, c1) in tiles:
            mt, nt = r1 - r0, c1 - c0
            acc = loop.next_acc()
            mm = -1
            for j, (ka, kb) in enumerate(k1_chunks):
                kt = kb - ka
                sa, sb = loop.next_l1()
                if not resident:
                    la = loop.load_l1(f"ld_x[{r0}:{r1},{ka}:{kb}]", sa, GmRef("x", ((r0, r1), (ka, kb))),
                                      mt * kt * 2, Role.ACTIVATION, COPY)
                elif x_rows != (r0, r1):
                    la = loop.load_l1(f"ld_x[{r0}:{r1},:]", sa, GmRef("x", ((r0, r1), (0, k))), mt * k * 2,
                                      Role.ACTIVATION, COPY)
                    x_rows = (r0, r1)
                lb = handoff.chunk(loop, sb, ka, kb, c0, c1, dequant_pieces(plan, ka, kb, group_k))
                mm = loop.chunk(f"[{r0},{c0},{ka}]", sa, la, sb, lb, mt, kt, nt, acc, j == 0, "bf16",
                                a_col0=ka if resident else 0)
            fix = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", aic, Path.L0C_TO_GM, mt * nt * 2, Role.OUTPUT,
                        gm=GmRef("y", ((r0, r1), (c0, c1))), src=acc, deps=[mm], compute=TO_BF16)
            loop.readers[acc] = [fix]
    return g


class _DequantAiv:
    """One AIV's UB slots (double-buffered) and its dequant program for weight pieces (piece_k x n0 at most)."""

    def __init__(self, g: KernelGraph, aiv: Unit, piece_k: int, n0: int, group_k: int | None, steps):
        self.g, self.unit, self.group_k, self.steps = g, aiv, group_k, steps
        c, name = aiv.core, aiv.name
        elems = piece_k * n0
        scale_bytes = 4 * n0 * (ceil(piece_k / group_k) if group_k else 1)
        self.q = [g.slot(f"c{c}.{name}.q{i}", aiv, Buffer.UB, elems) for i in range(2)]
        self.s = [g.slot(f"c{c}.{name}.s{i}", aiv, Buffer.UB, scale_bytes) for i in range(2)]
        self.tmp = [g.slot(f"c{c}.{name}.f32_{i}", aiv, Buffer.UB, 4 * elems) for i in range(2)]
        self.out = [g.slot(f"c{c}.{name}.bf16_{i}", aiv, Buffer.UB, 2 * elems) for i in range(2)]
        self.readers: dict[str, list[int]] = {s: [] for s in (*self.q, *self.s, *self.tmp, *self.out)}
        self._n = 0
        self.out_slot = self.out[0]
        self._scales: tuple | None = None  # (slot, region, load op) of the per-channel scales in UB

    def dequant(self, tag: str, ka: int, kb: int, c0: int, c1: int) -> int:
        """Load codes and scales, run the program; returns the op that leaves bf16 in `self.out_slot`."""
        g, u, s = self.g, self.unit, self._n % 2
        self._n += 1
        kt, nt = kb - ka, c1 - c0
        q, sc, tmp, out = self.q[s], self.s[s], self.tmp[s], self.out[s]
        lq = g.dma(f"ld_wq{tag}", u, Path.GM_TO_UB, kt * nt, Role.WEIGHT, gm=GmRef("wq", ((ka, kb), (c0, c1))),
                   dst=q, slot_deps=self.readers[q], compute=COPY)
        region = ((c0, c1),) if self.group_k is None else ((ka // self.group_k, ceil(kb / self.group_k)), (c0, c1))
        if self.group_k is None and self._scales is not None and self._scales[1] == region:
            sc, _, ls = self._scales  # per-channel scales of this column tile are already in UB
        else:
            scale_bytes = 4 * nt * (1 if self.group_k is None else region[0][1] - region[0][0])
            ls = g.dma(f"ld_ws{tag}", u, Path.GM_TO_UB, scale_bytes, Role.WEIGHT_SCALE, gm=GmRef("ws", region),
                       dst=sc, slot_deps=self.readers[sc], compute=COPY)
            self.readers[sc] = []
            self._scales = (sc, region, ls)
        # The first step reads codes and scales and does the numerics into the fp32 temporary; the last
        # narrows into the bf16 out slot, once the previous chunk in that slot has been handed off.
        ids = emit_program(
            g, u, tag, self.steps, kt * nt,
            first=dict(reads=(q, sc), writes=(tmp,), deps=(lq, ls), slot_deps=self.readers[tmp],
                       compute={"fn": "dequant_int", "group_k": self.group_k}),
            last=dict(reads=(tmp,), writes=(out,), slot_deps=self.readers[out], compute=COPY))
        self.readers[q] = [ids[0]]
        self.readers[sc].append(ids[0])
        self.readers[tmp], self.readers[out] = [ids[-1]], []
        self.out_slot = out
        return ids[-1]


# ---- MSD ----------------------------------------------------------------------------------------------

def _msd_ub_per_element(passes: int) -> int:
    """UB bytes per element of a decomposition piece: bf16 x in, an fp32 temporary, the int8 passes."""
    return 2 + 4 + passes


def _msd_recombine_ub_per_element() -> int:
    """UB bytes per stacked accumulator element: int32 partial in, an fp32 temporary, bf16 out."""
    return 4 + 4 + 2


def _build_msd(cfg, m, k, n, cores, passes, tiling=None) -> KernelGraph:
    p = passes
    direct_out = cfg.dma.l0c_to_ub is not None
    plan = msd_plan(cfg, m, k, n, cores, p, tiling)
    t, resident, piece, rc = plan.tiling, plan.a_resident, plan.piece, plan.recombine_rows
    g = KernelGraph(name=f"gemm_msd{p}_int8_{m}x{k}x{n}")
    g.meta = {"kernel": "gemm", "method": "msd", "weights": "int8", "passes": p, "m": m, "k": k, "n": n,
              "cores": cores, "partials": "l0c_to_ub" if direct_out else "gm_workspace",
              "a_resident_in_l1": resident, "tiling": tiling_meta(t), **share_meta(plan.share)}
    g.tensor("x", (m, k), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
    _weight_tensors(g, k, n, None)
    g.tensor("y", (m, n), "bf16", Role.OUTPUT)
    g.reference = {"fn": "gemm_msd_int8", "inputs": ["x", "wq", "ws"], "output": "y",
                   "kwargs": {"passes": p}, "truth": "gemm_fp64_int"}

    pieces = split(k, piece)
    g.tensor("xa", (p, m, k), "int8", Role.WORKSPACE)            # the stacked passes
    g.tensor("xmax", (len(pieces), m), "fp32", Role.WORKSPACE)   # per-piece row maxima
    if not direct_out:
        g.tensor("part", (p, m, n), "int32", Role.PARTIAL)
    g.meta.update(decompose_piece_k=piece, recombine_rows=rc)

    row_blocks = split(m, t.m0)
    all_aivs = [Unit(c, f"aiv{i}") for c in range(cores) for i in range(min(2, cfg.chip.aiv_per_core))]
    sides = {u: _MsdAiv(g, u, t, piece, p, len(pieces), rc) for u in all_aivs}
    # Phase 1: every (row block, piece) on its own AIV, round robin; partial maxima, barrier, decompose.
    work = [(rb, pc) for rb in row_blocks for pc in pieces]
    owner = {w: all_aivs[i % len(all_aivs)] for i, w in enumerate(work)}
    max_written: dict[tuple, list[int]] = {rb: [] for rb in row_blocks}
    for rb, pc in work:
        max_written[rb].append(sides[owner[(rb, pc)]].partial_max(rb, pc, pieces.index(pc)))
    xa_written = {(rb, pc): sides[owner[(rb, pc)]].decompose(rb, pc, len(pieces), max_written[rb])
                  for rb, pc in work}

    def load_a(loop: CubeLoop, aic: Unit, slot: str, r0: int, r1: int, ka: int, kb: int) -> int:
        """The stacked passes of rows [r0, r1) and K [ka, kb) into `slot`, in one DMA once every piece it
        covers has been written (the pieces, written separately, are resident in L2 together)."""
        mt = r1 - r0
        covered = [xa_written[((r0, r1), pc)] for pc in pieces if ka <= pc[0] < kb]
        la = g.dma(f"ld_xa[{r0}:{r1},{ka}:{kb}]", aic, Path.GM_TO_L1, p * mt * (kb - ka), Role.WORKSPACE,
                   gm=GmRef("xa", ((0, p), (r0, r1), (ka, kb))), dst=slot, deps=covered,
                   slot_deps=loop.readers[slot], compute={"fn": "copy", "reshape": (p * mt, kb - ka)})
        loop.readers[slot] = []
        return la

    # Phase 2 + 3: the Cube on raw int8 weights, then recombination on the core's AIVs.
    steps_post = msd_recombine_steps(p)
    k1_chunks = k_chunks(k, t.k1, t.k0)
    for core, tiles in enumerate(assign_tiles(m, n, t, cores, "columns", plan.share)):
        aic = Unit(core, "aic")
        aivs = [u for u in all_aivs if u.core == core]
        loop = CubeLoop(g, aic, t, a_rows=p * t.m0, a_dtype="int8", b_dtype="int8",
                        a_resident_k=k if resident else None)
        a_rows_loaded, la_all = None, -1
        n_rec = 0
        for ti, ((r0, r1), (c0, c1)) in enumerate(tiles):
            mt, nt = r1 - r0, c1 - c0
            acc = loop.next_acc()
            slots = [loop.next_l1() for _ in k1_chunks]

            def load_b(j: int) -> int:
                ka, kb = k1_chunks[j]
                return loop.load_l1(f"ld_wq[{ka}:{kb},{c0}:{c1}]", slots[j][1], GmRef("wq", ((ka, kb), (c0, c1))),
                                    (kb - ka) * nt, Role.WEIGHT, COPY)

            # MTE2 runs in program order. The core's first tile loads two weight chunks first (they need no
            # decomposition, which runs meanwhile); later tiles one. Then the A the first chunk needs (the
            # resident A once per row block, or A chunk 0), then weights one chunk ahead of the Cube: an A
            # chunk queued behind weight loads that wait for free L1 slots would idle the Cube at every tile.
            ahead = len(loop.b1)
            first_w = 2 if ti == 0 else 1
            lbs = {j: load_b(j) for j in range(min(first_w, len(k1_chunks)))}
            if resident and a_rows_loaded != (r0, r1):
                la_all = load_a(loop, aic, loop.a1[0], r0, r1, 0, k)
                a_rows_loaded = (r0, r1)
            # Not resident: A chunks run one chunk ahead of the Cube, each issued before the weight load
            # that has to wait for a free slot (so A never queues behind it on the in-order MTE2).
            las = {} if resident else {0: load_a(loop, aic, slots[0][0], r0, r1, *k1_chunks[0])}
            for j in range(first_w, min(ahead, len(k1_chunks))):
                lbs[j] = load_b(j)
            mm = -1
            for j, (ka, kb) in enumerate(k1_chunks):
                sa, sb = slots[j]
                la = la_all if resident else las[j]
                mm = loop.chunk(f"[{r0},{c0},{ka}]", sa, la, sb, lbs[j], p * mt, kb - ka, nt, acc, j == 0, "int8",
                                a_col0=ka if resident else 0)
                if not resident and j + 1 < len(k1_chunks):
                    las[j + 1] = load_a(loop, aic, slots[j + 1][0], r0, r1, *k1_chunks[j + 1])
                if j + ahead < len(k1_chunks):
                    lbs[j + ahead] = load_b(j + ahead)
            drains = []
            if not direct_out:
                # one FixPipe write of the whole tile's partials; each AIV then reads its rows of it
                fix = g.dma(f"st_part[{r0},{c0}]", aic, Path.L0C_TO_GM, p * mt * nt * 4, Role.PARTIAL,
                            gm=GmRef("part", ((0, p), (r0, r1), (c0, c1))), src=acc, deps=[mm],
                            compute={"fn": "copy", "reshape": (p, mt, nt)})
                drains.append(fix)
            for ra, rb in split(mt, rc):
                side = sides[aivs[n_rec % len(aivs)]]
                n_rec += 1
                pin = None
                if direct_out:
                    pin = side.next_partial_slot()
                    fix = g.dma(f"fix_part[{r0 + ra},{c0}]", aic, Path.L0C_TO_UB, p * (rb - ra) * nt * 4,
                                Role.PARTIAL, src=acc, dst=pin, deps=[mm], slot_deps=side.readers[pin],
                                compute={"fn": "copy", "view": (p, mt, nt), "sub": ((0, p), (ra, rb), (0, nt))})
                    side.readers[pin] = []
                    drains.append(fix)
                side.recombine((r0 + ra, r0 + rb), (c0, c1), fix, pin, len(pieces),
                               max_written[(r0, r1)], steps_post)
            loop.readers[acc] = drains
    return g


class _MsdAiv(AivSide):
    """One AIV's UB slots and its three MSD stages: partial row max, decomposition, recombination.
    Every slot is double-buffered; each stage alternates between its two sets."""

    def __init__(self, g: KernelGraph, aiv: Unit, t: GemmTiling, piece: int, passes: int, n_pieces: int,
                 rec_rows: int):
        self.g, self.unit, self.p = g, aiv, passes
        c, name = aiv.core, aiv.name
        rows = t.m0
        acc_elems = passes * rec_rows * t.n0

        def pair(tag: str, nbytes: int) -> list[str]:
            return [g.slot(f"c{c}.{name}.{tag}{i}", aiv, Buffer.UB, nbytes) for i in range(2)]

        self.x, self.f32, self.comp = pair("x", 2 * rows * piece), pair("f32_", 4 * rows * piece), \
            pair("comp", passes * rows * piece)
        self.rmax = pair("rmax", 4 * rows * n_pieces)
        self.pin, self.acc = pair("part", 4 * acc_elems), pair("acc", 4 * acc_elems)
        self.ws, self.out = pair("ws", 4 * t.n0), pair("y", 2 * rec_rows * t.n0)
        self.readers: dict[str, list[int]] = {s: [] for s in (*self.x, *self.f32, *self.comp, *self.rmax,
                                                              *self.pin, *self.acc, *self.ws, *self.out)}
        self._turn = {"piece": 0, "rmax": 0, "pin": 0, "rec": 0}

    def partial_max(self, rb, pc, pi: int) -> int:
        """max |x| over one piece of a row block -> xmax[pi, rows] in the workspace."""
        g, u = self.g, self.unit
        (r0, r1), (pa, pb) = rb, pc
        rows, kt = r1 - r0, pb - pa
        s = self._next("piece")
        x, f, rm = self.x[s], self.f32[s], self.rmax[self._next("rmax")]
        lx = self.load(f"ld_x[{r0}:{r1},{pa}:{pb}]", x, "x", ((r0, r1), (pa, pb)), rows * kt * 2, Role.ACTIVATION)
        ids = emit_program(g, u, f"_max[{r0},{pa}]", MSD_ABSMAX, rows * kt,
                           first=dict(deps=(lx,), reads=(x,), writes=(f,), slot_deps=self.readers[f]),
                           last=dict(reads=(x,), writes=(rm,), slot_deps=self.readers[rm],
                                     compute={"fn": "row_absmax", "init": True}))
        self.readers[x] += [ids[0], ids[-1]]
        self.readers[f] = [ids[-1]]
        st = g.dma(f"st_xmax[{pi},{r0}:{r1}]", u, Path.UB_TO_GM, rows * 4, Role.WORKSPACE,
                   gm=GmRef("xmax", ((pi, pi + 1), (r0, r1))), src=rm, deps=[ids[-1]], compute=COPY)
        self.readers[rm] = [st]
        return st

    def _row_max(self, rb, n_pieces: int, max_written: list[int], tag: str) -> tuple[str, int]:
        """Load every piece's maxima of a row block (once all are written) and reduce them."""
        r0, r1 = rb
        rows = r1 - r0
        rm = self.rmax[self._next("rmax")]
        lm = self.load(f"ld_xmax{tag}", rm, "xmax", ((0, n_pieces), (r0, r1)), n_pieces * rows * 4,
                        Role.WORKSPACE, deps=max_written)
        red = self.g.vec(f"reduce_max{tag}", self.unit, "reduce_max", n_pieces * rows, "fp32", reads=(rm,),
                         writes=(rm,), deps=(lm,), compute={"fn": "max_axis0"})
        self.readers[rm] = [red]
        return rm, red

    def decompose(self, rb, pc, n_pieces: int, max_written: list[int]) -> int:
        """Reload the piece, reduce the row maxima, run the p-pass decomposition, write it to xa."""
        g, u, p = self.g, self.unit, self.p
        (r0, r1), (pa, pb) = rb, pc
        rows, kt = r1 - r0, pb - pa
        tag = f"[{r0},{pa}]"
        rm, red = self._row_max(rb, n_pieces, max_written, tag)
        s = self._next("piece")
        x, f, comp = self.x[s], self.f32[s], self.comp[s]
        lx = self.load(f"ld_x2[{r0}:{r1},{pa}:{pb}]", x, "x", ((r0, r1), (pa, pb)), rows * kt * 2, Role.ACTIVATION)
        ids = emit_program(g, u, f"_msd{tag}", (MSD_ABSMAX[0],) + msd_decompose_steps(p), rows * kt,
                           first=dict(deps=(lx, red), reads=(x,), writes=(f,), slot_deps=self.readers[f]),
                           last=dict(reads=(x, rm), writes=(comp,), slot_deps=self.readers[comp],
                                     compute={"fn": "msd_decompose", "passes": p}))
        self.readers[x] += [ids[0], ids[-1]]
        self.readers[rm].append(ids[-1])
        self.readers[f] = [ids[-1]]
        st = g.dma(f"st_xa{tag}", u, Path.UB_TO_GM, p * rows * kt, Role.WORKSPACE,
                   gm=GmRef("xa", ((0, p), (r0, r1), (pa, pb))), src=comp, deps=[ids[-1]], compute=COPY)
        self.readers[comp] = [st]
        return st

    def next_partial_slot(self) -> str:
        return self.pin[self._next("pin")]

    def recombine(self, rb, cb, fix: int, pin: str | None, n_pieces: int, max_written: list[int], steps) -> int:
        """Combine the passes' int32 partials with the row and channel scales; write bf16 Y."""
        g, u, p = self.g, self.unit, self.p
        (r0, r1), (c0, c1) = rb, cb
        rows, nt = r1 - r0, c1 - c0
        tag = f"[{r0},{c0}]"
        # scales and row maxima first: MTE2 runs in order, and these need not wait for the Cube
        s = self._next("rec")
        ws, acc, out = self.ws[s], self.acc[s], self.out[s]
        lw = self.load(f"ld_ws{tag}", ws, "ws", ((c0, c1),), nt * 4, Role.WEIGHT_SCALE)
        rm, red = self._row_max(rb, n_pieces, max_written, tag)
        if pin is None:
            pin = self.next_partial_slot()
            lp = self.load(f"ld_part{tag}", pin, "part", ((0, p), (r0, r1), (c0, c1)), p * rows * nt * 4,
                            Role.PARTIAL, deps=[fix])
        else:
            lp = fix
        ids = emit_program(g, u, f"_rec{tag}", steps, p * rows * nt,
                           first=dict(deps=(lp, lw, red), reads=(pin,), writes=(acc,), slot_deps=self.readers[acc]),
                           last=dict(reads=(pin, rm, ws), writes=(out,), slot_deps=self.readers[out],
                                     compute={"fn": "msd_recombine", "passes": p}))
        for slot in (pin, rm, ws):
            self.readers[slot].append(ids[-1])
        self.readers[acc] = [ids[-1]]
        st = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", u, Path.UB_TO_GM, rows * nt * 2, Role.OUTPUT,
                   gm=GmRef("y", ((r0, r1), (c0, c1))), src=out, deps=[ids[-1]], compute=COPY)
        self.readers[out] = [st]
        return st
