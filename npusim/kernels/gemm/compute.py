"""Tile-level numerics of the quantized GEMM schedules, registered for the datapath.

Each function is a thin call into npusim.numerics, the same primitives the whole-tensor references are
built from: that is what makes the simulated output bit-exact against the reference.
"""

from __future__ import annotations

import numpy as np

from npusim.graph.ops import Op, Tensor
from npusim.hw.datapath import Datapath, Inputs, register, register_init
from npusim.numerics.cube import to_bf16
from npusim.numerics.dtypes import np_dtype
from npusim.numerics.intq import dequant_int_tile, quantize_weights_int
from npusim.numerics.msd import (
    msd_apply_scales, msd_combine_passes, msd_decompose, msd_row_scale, msd_stack, msd_unstack, row_absmax,
)


@register_init("quant_int")
def _init_quant_int(t: Tensor, spec: dict, inputs: Inputs) -> np.ndarray:
    """Quantized integer weights made from one float tensor (`source`): part "q" (codes) or "scale"."""
    key = ("quant_int", spec["source"], spec["bits"], spec.get("group_k"))
    if key not in inputs.cache:
        k, n = spec["shape"]
        w = inputs.random(spec["source"], (k, n), {"kind": "normal", "std": spec.get("std", 1.0)})
        inputs.cache[key] = quantize_weights_int(w, bits=spec["bits"], group_k=spec.get("group_k"))
    qw = inputs.cache[key]
    # No copy when the dtype already matches: this run's GM tensor and the cache share the array.
    return (qw.q if spec["part"] == "q" else qw.scale).astype(np_dtype(t.dtype), copy=False)


@register("dequant_int")
def _dequant_int(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [codes, scales] -> writes [bf16 tile]: bf16(fp32(q) * s)."""
    q = dp.read_slot(op, op.reads[0])
    s = dp.read_slot(op, op.reads[1])
    return {op.writes[0]: dequant_int_tile(q, s, spec.get("group_k"))}


@register("row_absmax")
def _row_absmax(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [x chunk] (+ [running max]) -> writes [running max]: max |x| per row so far, fp32."""
    chunk_max = row_absmax(dp.read_slot(op, op.reads[0]))
    if not spec.get("init"):
        chunk_max = np.maximum(dp.read_slot(op, op.writes[0]), chunk_max)
    return {op.writes[0]: chunk_max}


@register("msd_decompose")
def _msd_decompose(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [x chunk, row max] -> writes [components], stacked pass-major (passes x rows, k)."""
    x = dp.read_slot(op, op.reads[0])
    rmax = dp.read_slot(op, op.reads[1])
    return {op.writes[0]: msd_stack(msd_decompose(x, rmax, spec["passes"]))}


@register("msd_recombine")
def _msd_recombine(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [int32 partials (passes x rows, n), row max, weight scales] -> writes [bf16 output tile]."""
    part = dp.read_slot(op, op.reads[0])
    part = part.reshape(-1, part.shape[-1])  # a GM region arrives as (passes, rows, n)
    rmax = dp.read_slot(op, op.reads[1])
    ws = dp.read_slot(op, op.reads[2])
    acc = msd_combine_passes(msd_unstack(part, spec["passes"]))
    return {op.writes[0]: to_bf16(msd_apply_scales(acc, msd_row_scale(rmax), ws))}


@register("max_axis0")
def _max_axis0(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [per-piece row maxima (pieces, rows)] -> writes [row maxima (rows,)], fp32 (exact)."""
    return {op.writes[0]: np.asarray(dp.read_slot(op, op.reads[0])).max(axis=0).astype(np.float32)}
