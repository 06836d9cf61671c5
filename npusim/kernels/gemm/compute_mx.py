"""Tile-level numerics of the MX GEMM schedules (mx_schedules.py), registered for the datapath.

An MX operand in a buffer slot is one `MxTile`: the elements and their E8M0 scales together, so one op
moves (or multiplies) both, as the hardware moves an MX tile with its scales. `axis` is the blocked (K)
axis: 1 for an A tile (rows x K, scales rows x K/32), 0 for a B tile (K x N, scales K/32 x N).

GM holds elements and scales as two tensors (their bytes have different roles), so a GM load fills a
slot in two DMAs: part "elems" first (it starts a fresh tile with no scales), then part "scales" (it
checks that it completes exactly that tile). Both must be on one pipe, in that order: a pipe runs its
ops one at a time, so the second reads the slot after the first has written it.

Every function is a thin call into npusim.numerics, the primitives the whole-tensor references are built
from, which is what makes the simulated output bit-exact against the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npusim.errors import GraphError
from npusim.graph.ops import Op, Tensor
from npusim.hw.datapath import Datapath, Inputs, register, register_init
from npusim.numerics.cube import mmad_mx_fp32, to_bf16
from npusim.numerics.msd_mx import msd_mx_combine, msd_mx_decompose
from npusim.numerics import reference as ref
from npusim.numerics.mx import MX_BLOCK, MXFP4, MXTensor, dequant_mx_tile, mx_format, quantize_mx
from npusim.sim.references import register_reference


def _region(region) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in region)


def gemm_fp64_mx(x: np.ndarray, w_elems: np.ndarray, w_scales: np.ndarray, **_: object) -> np.ndarray:
    """FP64 truth for MX weights: X @ (element x 2**e), on the exact values the weights stand for."""
    w = MXTensor(np.asarray(w_elems), np.asarray(w_scales), mx_format(_elem_format(w_elems)), 0).values_fp64()
    return np.asarray(x, dtype=np.float64) @ w


def _elem_format(elems: np.ndarray) -> str:
    return "mxfp4" if np.asarray(elems).dtype == MXFP4.elem_dtype else "mxfp8"


# The whole-tensor references the MX schedules name (npusim.numerics.reference), and the FP64 truth.
register_reference("gemm_dequant_mx", ref.gemm_dequant_mx)
register_reference("gemm_msd_mx", ref.gemm_msd_mx)
register_reference("gemm_mx_direct", ref.gemm_mx_direct)
register_reference("gemm_fp64_mx", gemm_fp64_mx)


@dataclass(frozen=True, eq=False)
class MxTile:
    elems: np.ndarray
    scales: np.ndarray | None  # None while a GM load has brought the elements but not yet the scales
    axis: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.elems.shape

    def sub_k(self, a: int, b: int) -> "MxTile":
        """Elements [a, b) along K with their scales; a must be on a block boundary."""
        if a % MX_BLOCK or (b % MX_BLOCK and b != self.elems.shape[self.axis]):
            raise GraphError(f"MX sub-tile [{a}, {b}) along K is not on {MX_BLOCK}-element block boundaries")
        sa, sb = a // MX_BLOCK, -(-b // MX_BLOCK)
        if self.axis == 1:
            return MxTile(self.elems[:, a:b].copy(), self.scales[:, sa:sb].copy(), 1)
        return MxTile(self.elems[a:b].copy(), self.scales[sa:sb].copy(), 0)

    def sub_other(self, a: int, b: int) -> "MxTile":
        """Rows [a, b) of an A tile / columns [a, b) of a B tile (the non-blocked axis)."""
        if self.axis == 1:
            return MxTile(self.elems[a:b].copy(), self.scales[a:b].copy(), 1)
        return MxTile(self.elems[:, a:b].copy(), self.scales[:, a:b].copy(), 0)


def _read_tile(dp: Datapath, op: Op, name: str) -> MxTile:
    t = dp.read_slot(op, name)
    if not isinstance(t, MxTile):
        raise GraphError(f"op {op.name!r}: slot {name!r} holds {type(t).__name__}, not an MX tile")
    if t.scales is None:
        raise GraphError(f"op {op.name!r}: slot {name!r} holds MX elements whose scales were never loaded")
    return t


@register_init("quant_mx")
def _init_quant_mx(t: Tensor, spec: dict, inputs: Inputs) -> np.ndarray:
    """MX weights (K x N, blocks along K) made from one float tensor (`source`): part "elems" or "scales"."""
    key = ("quant_mx", spec["source"], spec["fmt"], spec.get("rule", "noclip"))
    if key not in inputs.cache:
        k, n = spec["shape"]
        w = inputs.random(spec["source"], (k, n), {"kind": "normal", "std": spec.get("std", 1.0)})
        inputs.cache[key] = quantize_mx(w, spec["fmt"], axis=0, rule=spec.get("rule", "noclip"), name=t.name)
    q = inputs.cache[key]
    return q.elems if spec["part"] == "elems" else q.scales


@register("mx_load")
def _mx_load(dp: Datapath, op: Op, spec: dict) -> dict:
    """GM region -> one part of an MX tile slot. spec: part ("elems" | "scales"), axis, reshape (opt.)."""
    src = dp.gm[op.gm.tensor][_region(op.gm.region)]
    if "reshape" in spec:
        src = src.reshape(spec["reshape"])
    data = np.array(src, copy=True)
    dest = op.writes[0]
    if spec["part"] == "elems":
        return {dest: MxTile(data, None, spec["axis"])}
    cur = dp.slots.get(dest)
    if not isinstance(cur, MxTile) or cur.scales is not None:
        raise GraphError(f"op {op.name!r}: loads MX scales into {dest!r}, which does not hold freshly loaded "
                         f"elements (load part 'elems' first, on the same pipe)")
    want = list(cur.elems.shape)
    want[cur.axis] = -(-want[cur.axis] // MX_BLOCK)
    if list(data.shape) != want:
        raise GraphError(f"op {op.name!r}: scales {data.shape} do not match elements {cur.elems.shape}")
    return {dest: MxTile(cur.elems, data, cur.axis)}


@register("mx_store")
def _mx_store(dp: Datapath, op: Op, spec: dict) -> dict:
    """One part of an MX tile slot -> GM region (a workspace). spec: part, reshape (opt.)."""
    t = _read_tile(dp, op, op.reads[0])
    data = t.elems if spec["part"] == "elems" else t.scales
    if "reshape" in spec:
        data = data.reshape(spec["reshape"])
    return {"gm:": np.array(data, copy=True)}


@register("mx_copy")
def _mx_copy(dp: Datapath, op: Op, spec: dict) -> dict:
    """MX tile slot -> MX tile slot (UB->L1, L1->L0A/L0B), elements and scales together.
    spec: "sub_k" = [a, b) along K (block boundaries), "sub_other" = [a, b) along the other axis."""
    t = _read_tile(dp, op, op.reads[0])
    if "sub_k" in spec:
        t = t.sub_k(*spec["sub_k"])
    if "sub_other" in spec:
        t = t.sub_other(*spec["sub_other"])
    return {op.writes[0]: MxTile(t.elems.copy(), t.scales.copy(), t.axis)}


@register("mmad_mx")
def _mmad_mx(dp: Datapath, op: Op, spec: dict) -> dict:
    """acc (= writes[0]) <- (init ? 0 : acc) + A @ B, A and B MX tiles: numerics.cube.mmad_mx_fp32."""
    a = _read_tile(dp, op, op.reads[0])
    b = _read_tile(dp, op, op.reads[1])
    acc = None if spec.get("init") else dp.read_slot(op, op.writes[0])
    return {op.writes[0]: mmad_mx_fp32(acc, a.elems, a.scales, b.elems, b.scales)}


@register("dequant_mx")
def _dequant_mx(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [elements (K x N), E8M0 scales (K/32 x N)] -> writes [bf16 tile]: numerics.mx.dequant_mx_tile."""
    el = dp.read_slot(op, op.reads[0])
    sc = dp.read_slot(op, op.reads[1])
    return {op.writes[0]: dequant_mx_tile(el, sc, axis=0)}


@register("mx_decompose")
def _mx_decompose(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [bf16 x piece (rows x k)] -> writes [MX tile of the passes stacked pass-major (passes x rows, k)].
    spec: passes, fmt ("mxfp4" | "mxfp8"), rule. Blockwise, so any tiling on block boundaries agrees with
    the whole-tensor msd_mx_decompose."""
    x = dp.read_slot(op, op.reads[0])
    comps = msd_mx_decompose(x, spec["passes"], fmt=mx_format(spec["fmt"]), rule=spec.get("rule", "noclip"),
                             axis=1)
    return {op.writes[0]: MxTile(np.concatenate([c.elems for c in comps], axis=0),
                                 np.concatenate([c.scales for c in comps], axis=0), 1)}


@register("msd_mx_combine")
def _msd_mx_combine(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [fp32 partials (passes x rows, n) or (passes, rows, n)] -> writes [bf16]: sum in pass order."""
    part = np.asarray(dp.read_slot(op, op.reads[0]))
    p = spec["passes"]
    return {op.writes[0]: to_bf16(msd_mx_combine(part.reshape(p, -1, part.shape[-1])))}
