"""GEMM with MXFP4 weights (DESIGN.md 4.1, 4.2): the dequant baseline, MSD with MXFP4 activation passes,
and the single-pass MXFP8 "direct" comparison point.

Y (M x N, bf16) = X (M x K, bf16) @ W, W MXFP4 (E2M1 elements, one E8M0 scale per 32 elements along K).
GM holds W as two tensors: `we` (K x N elements, 0.5 B each) and `wsc` (K/32 x N scales, 1 B each), so the
weight bytes read are exactly packing.packed_nbytes("mxfp4", K, N).

dequant (any preset): an AIV loads a weight chunk's elements and scales into UB, runs MX_DEQUANT (fp4 ->
  fp16 -> fp32, x 2**e, -> bf16) and hands the bf16 chunk to the AIC through a GM workspace or, where the
  part has it, UB->L1; the AIC runs a bf16 GEMM with fp32 accumulation. Exact against
  reference.gemm_dequant_mx(k_tile=None).
msd (MX Cube, 950): the AIVs decompose X into `passes` MXFP4 passes (no-clip scales), stacked pass-major
  as passes x M rows, and hand elements + scales to the AIC; the AIC multiplies them by the raw MXFP4
  weights on the Cube (dtype "mxfp4": k0 = 64), fp32 accumulation chained over all of K; FixPipe hands the
  fp32 partials to the AIVs (L0C->UB, or a GM workspace), which add the passes in fp32 and cast to bf16.
  Exact against reference.gemm_msd_mx(k_tile=None).
direct (MX Cube): as msd with one MXFP8 pass (Cube dtype "mxfp8": k0 = 32), FixPipe casts Y to bf16.
  Exact against reference.gemm_mx_direct(k_tile=None).

The Cube is costed by the mmad's dtype, so with the same tiling two MXFP4 passes (2 x M rows at k0 = 64)
cost it what one MXFP8 pass (M rows at k0 = 32) costs.

Activation hand-off for msd / direct: when the stacked passes of all of X fit in half of L1 they stay
resident there, one L1 slot per (row block, K piece); on a part with UB->L1 each core's AIVs then
decompose X for their own AIC and write the pieces straight into L1 (the decomposition is blockwise, so
no row-wide reduction or cross-core barrier is needed). Otherwise the AIVs of all cores decompose X once
into GM workspaces (`xa_e`, `xa_s`) and each AIC loads what it needs.

An MX operand in a buffer slot is one compute_mx.MxTile (elements + scales): one op moves or multiplies
both; slot and DMA sizes count both (elements + 1 B per 32-element block).
"""

from __future__ import annotations

from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Buffer, GmRef, Path, Role, Unit
from npusim.kernels.gemm import compute_mx  # noqa: F401  (registers the compute functions used below)
from npusim.kernels.gemm.aiv_side import AivSide
from npusim.kernels.gemm.cube_loop import CubeLoop
from npusim.kernels.gemm.handoff import WeightHandoff, declare_workspace
from npusim.kernels.gemm.native import COPY, TO_BF16, check_shape, tiling_meta
from npusim.kernels.gemm.programs import DEQUANT, VecStep, emit_program
from npusim.kernels.gemm.tiling import GemmTiling, assign_tiles, choose_gemm_tiling, k_chunks, split
from npusim.numerics.mx import MX_BLOCK, MX_FORMATS

MX_METHODS = ("dequant", "msd", "direct")
ELEM_BITS = {name: f.elem_bits for name, f in MX_FORMATS.items()}  # mxfp4: 4, mxfp8: 8

_F32 = "fp32"
# ---- vector programs (per element; see programs.py for how a step is costed) ----------------------------
# Dequantize MXFP4 weights: unpack fp4 -> fp16, widen to fp32, multiply by 2**e, narrow to bf16.
MX_DEQUANT = DEQUANT["mxfp4"]
# One MX quantization pass over fp32 values: |v|, block max (per 32), v x 2**-e, narrow to fp16, to fp4/fp8.
MX_QUANT_PASS = (VecStep("abs", _F32), VecStep("reduce_max", _F32), VecStep("mul", _F32), VecStep("cast", _F32),
                 VecStep("cast", "fp16"))
# The residual for the next pass: widen the pass's elements, x 2**e, subtract.
MX_RESIDUAL = (VecStep("cast", "fp16"), VecStep("cast", _F32), VecStep("mul", _F32), VecStep("sub", _F32))


def mx_decompose_steps(passes: int) -> tuple[VecStep, ...]:
    """bf16 x -> fp32, then `passes` quantization passes with a residual between consecutive passes."""
    return (VecStep("cast", _F32),) + MX_QUANT_PASS + (MX_RESIDUAL + MX_QUANT_PASS) * (passes - 1)


def mx_combine_steps(passes: int) -> tuple[VecStep, ...]:
    """Per output element: add the passes' fp32 partials in pass order, cast to bf16."""
    return (VecStep("add", _F32),) * (passes - 1) + (VecStep("cast", _F32),)


def mx_elem_bytes(fmt: str, k: int, other: int) -> int:
    """Packed element bytes of an MX tile, k along the blocked axis (as packing.packed_nbytes)."""
    return other * ceil(k * ELEM_BITS[fmt] / 8)


def mx_scale_bytes(k: int, other: int) -> int:
    return other * ceil(k / MX_BLOCK)


def mx_bytes(fmt: str, k: int, other: int) -> int:
    """Elements + E8M0 scales of an MX tile (equals packing.packed_nbytes(fmt, k, other))."""
    return mx_elem_bytes(fmt, k, other) + mx_scale_bytes(k, other)


def check_mx_method(cfg: HardwareConfig, method: str, passes: int) -> None:
    if method not in MX_METHODS:
        raise GraphError(f"--method {method!r} with mxfp4 weights: choose one of {', '.join(MX_METHODS)}")
    if method in ("msd", "direct"):
        mode = "mxfp4" if method == "msd" else "mxfp8"
        if cfg.cube.mx_block_elements is None or "mxfp4" not in cfg.cube.k0 or mode not in cfg.cube.k0:
            raise GraphError(f"--method {method} with mxfp4 weights needs a Cube that takes MX formats; "
                             f"preset {cfg.meta.name} has none (the 950 preset does)")
        if cfg.cube.mx_block_elements != MX_BLOCK:
            raise GraphError(f"preset {cfg.meta.name}: cube.mx_block_elements = {cfg.cube.mx_block_elements}, "
                             f"the MX schedules use OCP blocks of {MX_BLOCK}")
    if method == "msd" and not 1 <= passes <= 4:
        raise GraphError(f"--passes {passes}: MSD takes 1 to 4 passes")


def build_gemm_mx(cfg: HardwareConfig, m: int, k: int, n: int, cores: int | None = None,
                  method: str = "dequant", passes: int = 2, tiling: GemmTiling | None = None) -> KernelGraph:
    """Y = X @ W with MXFP4 weights; method "dequant", "msd" (MXFP4 passes) or "direct" (one MXFP8 pass).
    `tiling` overrides the chosen tiling (for like-for-like comparisons); its k0 and k1 must be multiples
    of 32."""
    check_mx_method(cfg, method, passes)
    cores = check_shape(cfg, m, k, n, cores)
    if k % MX_BLOCK:
        raise GraphError(f"--weights mxfp4 needs K a multiple of the MX block ({MX_BLOCK} elements along K); "
                         f"K = {k}")
    if tiling is not None and (tiling.k0 % MX_BLOCK or tiling.k1 % tiling.k0):
        raise GraphError(f"tiling k0 = {tiling.k0}, k1 = {tiling.k1}: MX tiles need k0 a multiple of {MX_BLOCK} "
                         f"and k1 a multiple of k0")
    if method == "dequant":
        return _build_dequant_mx(cfg, m, k, n, cores, tiling)
    if method == "msd":
        return _build_mx_passes(cfg, m, k, n, cores, passes, "mxfp4", tiling)
    return _build_mx_passes(cfg, m, k, n, cores, 1, "mxfp8", tiling)


def _weight_tensors(g: KernelGraph, k: int, n: int) -> None:
    base = {"kind": "quant_mx", "source": "w_float", "fmt": "mxfp4", "rule": "noclip", "shape": (k, n),
            "std": 1.0 / max(1.0, k) ** 0.5}
    g.tensor("we", (k, n), "fp4", Role.WEIGHT, {**base, "part": "elems"})
    g.tensor("wsc", (k // MX_BLOCK, n), "e8m0", Role.WEIGHT_SCALE, {**base, "part": "scales"})


def _mx_tiling(cfg: HardwareConfig, m, k, n, cores, **kw) -> GemmTiling:
    """choose_gemm_tiling, with L1 / L0A / L0B shrunk by 16/17: it counts MX operands at their element
    bytes, and the scales add at most 1/16 of that (MXFP4: 1 B per 32 x 0.5 B)."""
    b = cfg.buffers
    shrunk = b.model_copy(update={"l1_bytes": b.l1_bytes * 16 // 17, "l0a_bytes": b.l0a_bytes * 16 // 17,
                                  "l0b_bytes": b.l0b_bytes * 16 // 17})
    return choose_gemm_tiling(cfg.model_copy(update={"buffers": shrunk}), m, k, n, cores, k1_multiple=MX_BLOCK,
                              partition="columns", **kw)


def _load_weights(g: KernelGraph, unit: Unit, path: Path, el_slot: str, sc_slot: str, ka: int, kb: int,
                  c0: int, c1: int, tag: str, *, el_slot_deps=(), sc_slot_deps=()) -> tuple[int, int]:
    """Two DMAs on one pipe: the elements (role weight), then the scales (role weight_scale). Into one MX
    tile slot (el_slot == sc_slot: compute mx_load) or into separate element and scale slots (copy)."""
    kt, nt = kb - ka, c1 - c0
    mx_tile = el_slot == sc_slot
    le = g.dma(f"ld_we{tag}", unit, path, mx_elem_bytes("mxfp4", kt, nt), Role.WEIGHT,
               gm=GmRef("we", ((ka, kb), (c0, c1))), dst=el_slot, slot_deps=el_slot_deps,
               compute={"fn": "mx_load", "part": "elems", "axis": 0} if mx_tile else COPY)
    ls = g.dma(f"ld_wsc{tag}", unit, path, mx_scale_bytes(kt, nt), Role.WEIGHT_SCALE,
               gm=GmRef("wsc", ((ka // MX_BLOCK, ceil(kb / MX_BLOCK)), (c0, c1))), dst=sc_slot,
               deps=[le] if mx_tile else (), slot_deps=sc_slot_deps,
               compute={"fn": "mx_load", "part": "scales", "axis": 0} if mx_tile else COPY)
    return le, ls


# ---- dequant ----------------------------------------------------------------------------------------------

# UB bytes per weight element of a dequant chunk: fp4 codes, an fp16 and an fp32 temporary, bf16 out (the
# scales, 1/32 B per element, are rounded into the codes' byte).
DEQUANT_MX_UB_BYTES_PER_ELEMENT = 1 + 2 + 4 + 2


def _build_dequant_mx(cfg, m, k, n, cores, tiling) -> KernelGraph:
    direct = cfg.dma.ub_to_l1 is not None
    ub_cap = cfg.buffers.ub_bytes // (2 * DEQUANT_MX_UB_BYTES_PER_ELEMENT)  # elements per chunk, double-buffered
    t = tiling or choose_gemm_tiling(cfg, m, k, n, cores, max_b_chunk_elements=ub_cap, k1_multiple=MX_BLOCK,
                                     partition="columns")
    g = KernelGraph(name=f"gemm_dequant_mxfp4_{m}x{k}x{n}")
    g.meta = {"kernel": "gemm", "method": "dequant", "weights": "mxfp4", "m": m, "k": k, "n": n, "cores": cores,
              "handoff": "ub_to_l1" if direct else "gm_workspace", "tiling": tiling_meta(t)}
    g.tensor("x", (m, k), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
    _weight_tensors(g, k, n)
    g.tensor("y", (m, n), "bf16", Role.OUTPUT)
    per_core = assign_tiles(m, n, t, cores, "columns")
    ring = declare_workspace(g, t, k, n, len(per_core), direct)
    g.reference = {"fn": "gemm_dequant_mx", "inputs": ["x", "we", "wsc"], "output": "y", "kwargs": {},
                   "truth": "gemm_fp64_mx"}
    k1_chunks = k_chunks(k, t.k1, t.k0, MX_BLOCK)
    for core, tiles in enumerate(per_core):
        aic = Unit(core, "aic")
        loop = CubeLoop(g, aic, t, a_rows=t.m0, a_dtype="bf16", b_dtype="bf16")
        aivs = [_DequantMxAiv(g, Unit(core, f"aiv{i}"), t) for i in range(min(2, cfg.chip.aiv_per_core))]
        handoff = WeightHandoff(g, aic, aivs, direct, ring)
        for (r0, r1), (c0, c1) in tiles:
            mt, nt = r1 - r0, c1 - c0
            acc = loop.next_acc()
            mm = -1
            for j, (ka, kb) in enumerate(k1_chunks):
                kt = kb - ka
                sa, sb = loop.next_l1()
                la = loop.load_l1(f"ld_x[{r0}:{r1},{ka}:{kb}]", sa, GmRef("x", ((r0, r1), (ka, kb))),
                                  mt * kt * 2, Role.ACTIVATION, COPY)
                lb = handoff.chunk(loop, sb, ka, kb, c0, c1)
                mm = loop.chunk(f"[{r0},{c0},{ka}]", sa, la, sb, lb, mt, kt, nt, acc, j == 0, "bf16")
            fix = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", aic, Path.L0C_TO_GM, mt * nt * 2, Role.OUTPUT,
                        gm=GmRef("y", ((r0, r1), (c0, c1))), src=acc, deps=[mm], compute=TO_BF16)
            loop.readers[acc] = [fix]
    return g


class _DequantMxAiv:
    """One AIV's UB slots (double-buffered) and its MXFP4 dequant program for weight chunks."""

    def __init__(self, g: KernelGraph, aiv: Unit, t: GemmTiling):
        self.g, self.unit = g, aiv
        c, name = aiv.core, aiv.name
        elems = t.k1 * t.n0
        self.q = [g.slot(f"c{c}.{name}.q{i}", aiv, Buffer.UB, mx_elem_bytes("mxfp4", t.k1, t.n0)) for i in range(2)]
        self.s = [g.slot(f"c{c}.{name}.s{i}", aiv, Buffer.UB, mx_scale_bytes(t.k1, t.n0)) for i in range(2)]
        self.tmp = [g.slot(f"c{c}.{name}.f16f32_{i}", aiv, Buffer.UB, 6 * elems) for i in range(2)]
        self.out = [g.slot(f"c{c}.{name}.bf16_{i}", aiv, Buffer.UB, 2 * elems) for i in range(2)]
        self.readers: dict[str, list[int]] = {s: [] for s in (*self.q, *self.s, *self.tmp, *self.out)}
        self._n = 0
        self.out_slot = self.out[0]

    def dequant(self, tag: str, ka: int, kb: int, c0: int, c1: int) -> int:
        """Load elements and scales, run the program; returns the op that leaves bf16 in `self.out_slot`."""
        g, u, s = self.g, self.unit, self._n % 2
        self._n += 1
        q, sc, tmp, out = self.q[s], self.s[s], self.tmp[s], self.out[s]
        lq, ls = _load_weights(g, u, Path.GM_TO_UB, q, sc, ka, kb, c0, c1, tag, el_slot_deps=self.readers[q],
                               sc_slot_deps=self.readers[sc])
        ids = emit_program(
            g, u, tag, MX_DEQUANT, (kb - ka) * (c1 - c0),
            first=dict(reads=(q, sc), writes=(tmp,), deps=(lq, ls), slot_deps=self.readers[tmp],
                       compute={"fn": "dequant_mx"}),
            last=dict(reads=(tmp,), writes=(out,), slot_deps=self.readers[out], compute=COPY))
        self.readers[q], self.readers[sc] = [ids[0]], [ids[0]]
        self.readers[tmp], self.readers[out] = [ids[-1]], []
        self.out_slot = out
        return ids[-1]


# ---- msd and direct: MX activations on the MX Cube ----------------------------------------------------------

class _MxCubeLoop:
    """The AIC side with MX operands: L1 / L0A / L0B slots hold compute_mx.MxTile (elements + scales),
    double-buffered as in cube_loop.CubeLoop; the Cube runs `mmad_dtype` mmads chained over all of K."""

    def __init__(self, g: KernelGraph, aic: Unit, t: GemmTiling, *, a_rows: int, a_fmt: str, a_chunk_slots: bool):
        self.g, self.aic, self.t, self.a_fmt = g, aic, t, a_fmt
        c = aic.core
        self.a1 = [g.slot(f"c{c}.l1.a{i}", aic, Buffer.L1, mx_bytes(a_fmt, t.k1, a_rows))
                   for i in range(2)] if a_chunk_slots else []
        self.b1 = [g.slot(f"c{c}.l1.b{i}", aic, Buffer.L1, mx_bytes("mxfp4", t.k1, t.n0)) for i in range(2)]
        self.a0 = [g.slot(f"c{c}.l0a.{i}", aic, Buffer.L0A, mx_bytes(a_fmt, t.k0, a_rows)) for i in range(2)]
        self.b0 = [g.slot(f"c{c}.l0b.{i}", aic, Buffer.L0B, mx_bytes("mxfp4", t.k0, t.n0)) for i in range(2)]
        self.acc = [g.slot(f"c{c}.l0c.{i}", aic, Buffer.L0C, a_rows * t.n0 * 4) for i in range(t.l0c_slots)]
        self.readers: dict[str, list[int]] = {s: [] for s in (*self.a1, *self.b1, *self.a0, *self.b0, *self.acc)}
        self._l1a = self._l1b = self._l0 = self._tiles = 0

    def next_acc(self) -> str:
        slot = self.acc[self._tiles % len(self.acc)]
        self._tiles += 1
        return slot

    def next_a(self) -> str:
        self._l1a += 1
        return self.a1[(self._l1a - 1) % 2]

    def next_b(self) -> str:
        self._l1b += 1
        return self.b1[(self._l1b - 1) % 2]

    def chunk(self, tag: str, a_at, sb: str, lb: int, a_rows: int, ka: int, kb: int, nt: int, acc: str,
              first: bool, mmad_dtype: str) -> int:
        """MTE1 + CUBE over the K chunk [ka, kb) in steps of k0; returns the last mmad.
        a_at(s) -> (L1 slot holding A at global K s, the op that filled it, the global K the slot starts at)."""
        g, aic = self.g, self.aic
        mm = -1
        for qa, qb in split(kb - ka, self.t.k0):
            qt = qb - qa
            sa, la, a0k = a_at(ka + qa)
            s0a, s0b = self.a0[self._l0 % 2], self.b0[self._l0 % 2]
            self._l0 += 1
            ma = g.dma(f"l0a{tag}[{qa}]", aic, Path.L1_TO_L0A, mx_bytes(self.a_fmt, qt, a_rows), Role.ACTIVATION,
                       src=sa, dst=s0a, deps=[la], slot_deps=self.readers[s0a],
                       compute={"fn": "mx_copy", "sub_k": (ka + qa - a0k, ka + qb - a0k)})
            mb = g.dma(f"l0b{tag}[{qa}]", aic, Path.L1_TO_L0B, mx_bytes("mxfp4", qt, nt), Role.WEIGHT,
                       src=sb, dst=s0b, deps=[lb], slot_deps=self.readers[s0b],
                       compute={"fn": "mx_copy", "sub_k": (qa, qb)})
            self.readers.setdefault(sa, []).append(ma)
            self.readers[sb].append(mb)
            mm = g.mmad(f"mmad{tag}[{qa}]", aic, a_rows, qt, nt, mmad_dtype,
                        reads=[s0a, s0b] if first else [s0a, s0b, acc], writes=[acc], deps=[ma, mb],
                        slot_deps=self.readers[acc] if first else (),
                        compute={"fn": "mmad_mx", "init": first})
            self.readers[s0a], self.readers[s0b] = [mm], [mm]
            first = False
        return mm


def _ub_per_decompose_element(passes: int, fmt: str) -> float:
    """UB bytes per activation element of a decomposition piece: bf16 x, an fp32 temporary (residual and
    scaled values), the passes' elements and scales."""
    return 2 + 4 + passes * (ELEM_BITS[fmt] / 8 + 1 / MX_BLOCK)


def _build_mx_passes(cfg, m, k, n, cores, p, fmt, tiling) -> KernelGraph:
    """msd (fmt "mxfp4", p passes) and direct (fmt "mxfp8", p = 1)."""
    method = "msd" if fmt == "mxfp4" else "direct"
    ub_to_l1 = cfg.dma.ub_to_l1 is not None
    direct_out = cfg.dma.l0c_to_ub is not None
    m16 = ceil(m / 16) * 16
    a_all_bytes = mx_bytes(fmt, k, p * m16)
    resident = a_all_bytes <= cfg.buffers.l1_bytes // 2
    t = tiling or _mx_tiling(cfg, m, k, n, cores, a_dtype=fmt, b_dtype="mxfp4",
                             out_dtype="fp32" if method == "msd" else "bf16", a_row_factor=p,
                             a_resident_bytes=a_all_bytes if resident else 0)
    handoff = "ub_to_l1" if resident and ub_to_l1 else "gm_workspace"
    name = f"gemm_msd{p}_mxfp4_{m}x{k}x{n}" if method == "msd" else f"gemm_direct_mxfp8_mxfp4_{m}x{k}x{n}"
    g = KernelGraph(name=name)
    g.tensor("x", (m, k), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
    _weight_tensors(g, k, n)
    g.tensor("y", (m, n), "bf16", Role.OUTPUT)
    if method == "msd":
        g.reference = {"fn": "gemm_msd_mx", "inputs": ["x", "we", "wsc"], "output": "y",
                       "kwargs": {"passes": p}, "truth": "gemm_fp64_mx"}
    else:
        g.reference = {"fn": "gemm_mx_direct", "inputs": ["x", "we", "wsc"], "output": "y", "kwargs": {},
                       "truth": "gemm_fp64_mx"}

    half_ub = cfg.buffers.ub_bytes // 2
    # Decomposition pieces: K chunks of the Cube loop, halved while a double-buffered piece of a row block
    # does not fit in half the UB; a multiple of k0, so that every k0 step lies in one piece.
    piece = t.k1
    while piece > t.k0 and 2 * t.m0 * piece * _ub_per_decompose_element(p, fmt) > half_ub:
        piece //= 2
    pieces = split(k, piece)
    rc = max(1, min(t.m0, m))  # rows of an output tile an AIV combines at once
    while rc > 1 and 2 * rc * t.n0 * (4 * p + 4 + 2) > half_ub:
        rc = max(1, rc // 2)
    g.meta = {"kernel": "gemm", "method": method, "weights": "mxfp4", "activations": fmt, "passes": p,
              "m": m, "k": k, "n": n, "cores": cores, "handoff": handoff, "a_resident_in_l1": resident,
              "partials": ("l0c_to_ub" if direct_out else "gm_workspace") if method == "msd" else "fixpipe_bf16",
              "decompose_piece_k": piece, "tiling": tiling_meta(t)}
    if method == "msd":
        g.meta["recombine_rows"] = rc
    if handoff == "gm_workspace":
        g.tensor("xa_e", (p, m, k), "fp4" if fmt == "mxfp4" else "fp8", Role.WORKSPACE)
        g.tensor("xa_s", (p, m, k // MX_BLOCK), "e8m0", Role.WORKSPACE)
    if method == "msd" and not direct_out:
        g.tensor("part", (p, m, n), "fp32", Role.PARTIAL)

    row_blocks = split(m, t.m0)
    n_aiv = min(2, cfg.chip.aiv_per_core)
    sides: dict[Unit, _MxAiv] = {}

    def side(u: Unit) -> _MxAiv:
        if u not in sides:
            sides[u] = _MxAiv(g, u, t, piece, p, fmt, rc)
        return sides[u]

    work = [(rb, pc) for rb in row_blocks for pc in pieces]
    ws_written: dict[tuple, list[int]] = {}
    if handoff == "gm_workspace":
        # every (row block, piece) decomposed once, on the AIVs of all cores in turn
        all_aivs = [Unit(c, f"aiv{i}") for c in range(cores) for i in range(n_aiv)]
        for i, (rb, pc) in enumerate(work):
            s = side(all_aivs[i % len(all_aivs)])
            out, op = s.decompose(rb, pc)
            ws_written[(rb, pc)] = s.store_workspace(rb, pc, out, op)

    steps_post = mx_combine_steps(p)
    k1_chunks = k_chunks(k, t.k1, t.k0, MX_BLOCK)
    for core, tiles in enumerate(assign_tiles(m, n, t, cores, "columns")):
        aic = Unit(core, "aic")
        aivs = [Unit(core, f"aiv{i}") for i in range(n_aiv)]
        loop = _MxCubeLoop(g, aic, t, a_rows=p * t.m0, a_fmt=fmt, a_chunk_slots=not resident)
        # Resident A: one L1 slot per (row block, piece), filled once and read by every tile of the row block.
        res: dict[tuple, tuple[str, int]] = {}
        if resident:
            for rb in row_blocks:
                for pc in pieces:
                    res[(rb, pc)] = (g.slot(f"c{core}.l1.xa[{rb[0]},{pc[0]}]", aic, Buffer.L1,
                                            mx_bytes(fmt, pc[1] - pc[0], p * (rb[1] - rb[0]))), -1)
            if handoff == "ub_to_l1":
                # this core's AIVs decompose X for their AIC and write the pieces straight into L1
                for i, (rb, pc) in enumerate(work):
                    s = side(aivs[i % len(aivs)])
                    out, op = s.decompose(rb, pc)
                    slot = res[(rb, pc)][0]
                    rows = p * (rb[1] - rb[0])
                    h = g.dma(f"ub2l1_xa[{rb[0]},{pc[0]}]", s.unit, Path.UB_TO_L1,
                              mx_bytes(fmt, pc[1] - pc[0], rows), Role.ACTIVATION, src=out, dst=slot, deps=[op],
                              compute={"fn": "mx_copy"})
                    s.readers[out] = [h]
                    res[(rb, pc)] = (slot, h)

        def load_a_ws(slot: str, rb, ka: int, kb: int, slot_deps) -> int:
            """Stacked passes of row block rb, K [ka, kb) from the workspace into an MX tile slot."""
            (r0, r1), rows = rb, p * (rb[1] - rb[0])
            covered = [op for pc in pieces if pc[0] < kb and pc[1] > ka for op in ws_written[(rb, pc)]]
            le = g.dma(f"ld_xa_e[{r0}:{r1},{ka}:{kb}]", aic, Path.GM_TO_L1, mx_elem_bytes(fmt, kb - ka, rows),
                       Role.WORKSPACE, gm=GmRef("xa_e", ((0, p), (r0, r1), (ka, kb))), dst=slot, deps=covered,
                       slot_deps=slot_deps,
                       compute={"fn": "mx_load", "part": "elems", "axis": 1, "reshape": (rows, kb - ka)})
            nb = ceil(kb / MX_BLOCK) - ka // MX_BLOCK
            return g.dma(f"ld_xa_s[{r0}:{r1},{ka}:{kb}]", aic, Path.GM_TO_L1, mx_scale_bytes(kb - ka, rows),
                         Role.WORKSPACE, gm=GmRef("xa_s", ((0, p), (r0, r1), (ka // MX_BLOCK, ka // MX_BLOCK + nb))),
                         dst=slot, deps=[le], compute={"fn": "mx_load", "part": "scales", "axis": 1,
                                                       "reshape": (rows, nb)})

        n_rec = 0
        for (r0, r1), (c0, c1) in tiles:
            rb = (r0, r1)
            mt, nt = r1 - r0, c1 - c0
            acc = loop.next_acc()
            mm = -1
            for j, (ka, kb) in enumerate(k1_chunks):
                sb = loop.next_b()
                _, lb = _load_weights(g, aic, Path.GM_TO_L1, sb, sb, ka, kb, c0, c1, f"[{ka}:{kb},{c0}:{c1}]",
                                      el_slot_deps=loop.readers[sb])
                loop.readers[sb] = []
                if resident:
                    if handoff == "gm_workspace":
                        for pc in pieces:
                            if pc[0] < kb and pc[1] > ka and res[(rb, pc)][1] < 0:
                                slot = res[(rb, pc)][0]
                                res[(rb, pc)] = (slot, load_a_ws(slot, rb, pc[0], pc[1], ()))

                    def a_at(s, rb=rb):
                        pc = pieces[s // piece]
                        slot, op = res[(rb, pc)]
                        return slot, op, pc[0]
                else:
                    sa = loop.next_a()
                    la = load_a_ws(sa, rb, ka, kb, loop.readers[sa])
                    loop.readers[sa] = []

                    def a_at(s, sa=sa, la=la, ka=ka):
                        return sa, la, ka
                mm = loop.chunk(f"[{r0},{c0},{ka}]", a_at, sb, lb, p * mt, ka, kb, nt, acc, j == 0,
                                "mxfp4" if method == "msd" else "mxfp8")
            if method == "direct":
                fix = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", aic, Path.L0C_TO_GM, mt * nt * 2, Role.OUTPUT,
                            gm=GmRef("y", ((r0, r1), (c0, c1))), src=acc, deps=[mm], compute=TO_BF16)
                loop.readers[acc] = [fix]
                continue
            drains = []
            if not direct_out:
                fix = g.dma(f"st_part[{r0},{c0}]", aic, Path.L0C_TO_GM, p * mt * nt * 4, Role.PARTIAL,
                            gm=GmRef("part", ((0, p), (r0, r1), (c0, c1))), src=acc, deps=[mm],
                            compute={"fn": "copy", "reshape": (p, mt, nt)})
                drains.append(fix)
            for ra, rb_ in split(mt, rc):
                s = side(aivs[n_rec % len(aivs)])
                n_rec += 1
                pin = s.next_partial_slot()
                if direct_out:
                    fix = g.dma(f"fix_part[{r0 + ra},{c0}]", aic, Path.L0C_TO_UB, p * (rb_ - ra) * nt * 4,
                                Role.PARTIAL, src=acc, dst=pin, deps=[mm], slot_deps=s.readers[pin],
                                compute={"fn": "copy", "view": (p, mt, nt), "sub": ((0, p), (ra, rb_), (0, nt))})
                    s.readers[pin] = []
                    drains.append(fix)
                    lp = fix
                else:
                    lp = s.load(f"ld_part[{r0 + ra},{c0}]", pin, "part", ((0, p), (r0 + ra, r0 + rb_), (c0, c1)),
                                p * (rb_ - ra) * nt * 4, Role.PARTIAL, deps=[fix])
                s.combine((r0 + ra, r0 + rb_), (c0, c1), lp, pin, steps_post)
            loop.readers[acc] = drains
    return g


class _MxAiv(AivSide):
    """One AIV's UB slots (each stage double-buffered) and its stages: decomposition of X pieces into MX
    passes, and (MSD) the combination of the passes' fp32 partials."""

    def __init__(self, g: KernelGraph, aiv: Unit, t: GemmTiling, piece: int, passes: int, fmt: str, rec_rows: int):
        self.g, self.unit, self.p, self.fmt = g, aiv, passes, fmt
        c, name = aiv.core, aiv.name
        rows = t.m0

        def pair(tag: str, nbytes: int) -> list[str]:
            return [g.slot(f"c{c}.{name}.{tag}{i}", aiv, Buffer.UB, nbytes) for i in range(2)]

        self.x, self.f32 = pair("x", 2 * rows * piece), pair("f32_", 4 * rows * piece)
        self.comp = pair("xa", mx_bytes(fmt, piece, passes * rows))
        self._rec = (rec_rows, t.n0)
        self.pin = self.tmp = self.out = []
        self.readers: dict[str, list[int]] = {s: [] for s in (*self.x, *self.f32, *self.comp)}
        self._turn = {"piece": 0, "pin": 0, "rec": 0}

    def _combine_slots(self) -> None:
        if self.pin:
            return
        rr, n0 = self._rec
        c, name, g, u = self.unit.core, self.unit.name, self.g, self.unit
        self.pin = [g.slot(f"c{c}.{name}.part{i}", u, Buffer.UB, 4 * self.p * rr * n0) for i in range(2)]
        self.tmp = [g.slot(f"c{c}.{name}.acc{i}", u, Buffer.UB, 4 * rr * n0) for i in range(2)]
        self.out = [g.slot(f"c{c}.{name}.y{i}", u, Buffer.UB, 2 * rr * n0) for i in range(2)]
        for s in (*self.pin, *self.tmp, *self.out):
            self.readers[s] = []

    def decompose(self, rb, pc) -> tuple[str, int]:
        """Load an X piece and decompose it; returns (UB slot holding the MX passes, the op that wrote it).
        The caller hands the slot on and sets its readers."""
        g, u, p = self.g, self.unit, self.p
        (r0, r1), (pa, pb) = rb, pc
        rows, kt = r1 - r0, pb - pa
        s = self._next("piece")
        x, f, comp = self.x[s], self.f32[s], self.comp[s]
        lx = self.load(f"ld_x[{r0}:{r1},{pa}:{pb}]", x, "x", ((r0, r1), (pa, pb)), rows * kt * 2, Role.ACTIVATION)
        ids = emit_program(g, u, f"_mx{p}[{r0},{pa}]", mx_decompose_steps(p), rows * kt,
                           first=dict(deps=(lx,), reads=(x,), writes=(f,), slot_deps=self.readers[f]),
                           last=dict(reads=(x,), writes=(comp,), slot_deps=self.readers[comp],
                                     compute={"fn": "mx_decompose", "passes": p, "fmt": self.fmt,
                                              "rule": "noclip"}))
        self.readers[x] += [ids[0], ids[-1]]
        self.readers[f] = [ids[-1]]
        self.readers[comp] = []
        return comp, ids[-1]

    def store_workspace(self, rb, pc, comp: str, op: int) -> list[int]:
        """Write the passes (elements, then scales) to the xa_e / xa_s workspaces."""
        g, u, p = self.g, self.unit, self.p
        (r0, r1), (pa, pb) = rb, pc
        rows, kt = r1 - r0, pb - pa
        nb = ceil(pb / MX_BLOCK) - pa // MX_BLOCK
        se = g.dma(f"st_xa_e[{r0},{pa}]", u, Path.UB_TO_GM, mx_elem_bytes(self.fmt, kt, p * rows), Role.WORKSPACE,
                   gm=GmRef("xa_e", ((0, p), (r0, r1), (pa, pb))), src=comp, deps=[op],
                   compute={"fn": "mx_store", "part": "elems", "reshape": (p, rows, kt)})
        ss = g.dma(f"st_xa_s[{r0},{pa}]", u, Path.UB_TO_GM, mx_scale_bytes(kt, p * rows), Role.WORKSPACE,
                   gm=GmRef("xa_s", ((0, p), (r0, r1), (pa // MX_BLOCK, pa // MX_BLOCK + nb))), src=comp,
                   deps=[op], compute={"fn": "mx_store", "part": "scales", "reshape": (p, rows, nb)})
        self.readers[comp] = [se, ss]
        return [se, ss]

    def next_partial_slot(self) -> str:
        self._combine_slots()
        return self.pin[self._next("pin")]

    def combine(self, rb, cb, lp: int, pin: str, steps) -> int:
        """Add the passes' fp32 partials in pass order, cast to bf16, write Y."""
        g, u, p = self.g, self.unit, self.p
        (r0, r1), (c0, c1) = rb, cb
        rows, nt = r1 - r0, c1 - c0
        tag = f"[{r0},{c0}]"
        s = self._next("rec")
        tmp, out = self.tmp[s], self.out[s]
        ids = emit_program(g, u, f"_comb{tag}", steps, rows * nt,
                           first=dict(deps=(lp,), reads=(pin,), writes=(tmp,), slot_deps=self.readers[tmp]),
                           last=dict(reads=(pin,), writes=(out,), slot_deps=self.readers[out],
                                     compute={"fn": "msd_mx_combine", "passes": p}))
        self.readers[pin] += [ids[0], ids[-1]]
        self.readers[tmp] = [ids[-1]]
        st = g.dma(f"st_y[{r0}:{r1},{c0}:{c1}]", u, Path.UB_TO_GM, rows * nt * 2, Role.OUTPUT,
                   gm=GmRef("y", ((r0, r1), (c0, c1))), src=out, deps=[ids[-1]], compute=COPY)
        self.readers[out] = [st]
        return st
