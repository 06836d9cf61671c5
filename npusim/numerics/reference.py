"""Whole-tensor reference GEMMs, built on the same Cube primitives the simulated ops call."""

from __future__ import annotations

import numpy as np

from npusim.errors import NumericsError
from npusim.numerics import checks
from npusim.numerics.cube import add_fp32, mmad_fp32, mmad_int32, mmad_mx_fp32, to_bf16
from npusim.numerics.intq import dequant_int_tile
from npusim.numerics.msd import (
    msd_apply_scales, msd_combine_passes, msd_decompose, msd_row_scale, msd_stack, msd_unstack,
    require_int32_safe, row_absmax,
)
from npusim.numerics.msd_mx import msd_mx_combine, msd_mx_decompose
from npusim.numerics.mx import MX_BLOCK, dequant_mx_tile, mx_format, require_mx_weights


def gemm_native_bf16(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """bf16 X (M x K) times bf16 W (K x N), fp32 accumulation along ascending K, bf16 output (RNE).

    A schedule that tiles M, N and K and chains each output tile's accumulator through its K steps in
    ascending order reproduces this bit for bit (see npusim.numerics.cube for why tiling cannot matter).
    """
    return to_bf16(mmad_fp32(None, x, w))


def gemm_fp64(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """FP64 ground truth of X @ W on the exact values of the (already quantized) inputs."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# References of the quantized methods (DESIGN.md section 4). Each is a composition of the per-tile
# primitives the simulated ops call, so a tiled schedule that makes the same K-slice choice reproduces it
# bit for bit, whatever its M and N tiles.
#
# `k_tile` is the accumulation order along K: None means one accumulator chain over all of K (the Cube
# chains L0C across its K steps, which for these primitives is indistinguishable from one whole-K call);
# an integer means the K axis is cut into slices of k_tile (ascending, the last may be shorter), each slice
# is accumulated from zero and recombined on its own, and the Vector adds the slices' fp32 results in
# ascending K (add_fp32). `out` is "bf16" (FixPipe / vector cast, RNE) or "fp32".
# ---------------------------------------------------------------------------------------------------------


def k_slices(k: int, k_tile: int | None, align: int = 1) -> list[tuple[int, int]]:
    """The K slices [k0, k1) of the accumulation order; k_tile must be a positive multiple of `align`."""
    if k_tile is None:
        return [(0, k)]
    if isinstance(k_tile, bool) or not isinstance(k_tile, (int, np.integer)) or k_tile <= 0:
        raise NumericsError(f"k_tile must be a positive integer or None, got {k_tile!r}")
    checks.require_multiple("k_tile", int(k_tile), align)
    return [(k0, min(k0 + int(k_tile), k)) for k0 in range(0, k, int(k_tile))] or [(0, 0)]


def _finish(y32: np.ndarray, out: str) -> np.ndarray:
    return to_bf16(y32) if checks.require_out(out) == "bf16" else y32


def _chain(parts) -> np.ndarray:
    acc = None
    for part in parts:
        acc = part if acc is None else add_fp32(acc, part)
    return acc


def _shapes(x: np.ndarray, w: np.ndarray, what: str) -> tuple[int, int, int]:
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise NumericsError(f"{what}: X {x.shape} and W {w.shape} are not M x K and K x N")
    return x.shape[0], x.shape[1], w.shape[1]


def gemm_bf16(x: np.ndarray, w: np.ndarray, *, k_tile: int | None = None, out: str = "bf16") -> np.ndarray:
    """Native bf16 GEMM (as gemm_native_bf16, which equals this with k_tile=None, out="bf16")."""
    checks.require_out(out)
    xb = checks.require_dtype("x", x, checks.BF16, ndim=2)
    wb = checks.require_dtype("w", w, checks.BF16, ndim=2)
    _, k, _ = _shapes(xb, wb, "gemm_bf16")
    checks.require_finite("x", xb)
    checks.require_finite("w", wb)
    return _finish(_chain(mmad_fp32(None, xb[:, a:b], wb[a:b]) for a, b in k_slices(k, k_tile)), out)


def gemm_dequant_int(x: np.ndarray, wq: np.ndarray, w_scale: np.ndarray, *, group_k: int | None = None,
                     k_tile: int | None = None, out: str = "bf16") -> np.ndarray:
    """Dequant baseline, integer weights (W8A16 per channel or per group, W4A16 per group).

    Vector: W_bf16 = dequant_int_tile(wq, s) = bf16(fp32(q) * s); Cube: bf16 x bf16 mmad, fp32 accumulation.
    K slices must start on group boundaries (k_tile a multiple of group_k).
    """
    checks.require_out(out)
    xb = checks.require_dtype("x", x, checks.BF16, ndim=2)
    _, k, _ = _shapes(xb, np.asarray(wq), "gemm_dequant_int")
    checks.require_finite("x", xb)
    slices = k_slices(k, k_tile, group_k or 1)
    w_bf16 = dequant_int_tile(wq, w_scale, group_k)
    return _finish(_chain(mmad_fp32(None, xb[:, a:b], w_bf16[a:b]) for a, b in slices), out)


def gemm_dequant_mx(x: np.ndarray, w_elems: np.ndarray, w_scales: np.ndarray, *, k_tile: int | None = None,
                    out: str = "bf16") -> np.ndarray:
    """Dequant baseline, MX weights (MXFP4 W4A16 on 950): W_bf16 = dequant_mx_tile, then bf16 mmad."""
    checks.require_out(out)
    xb = checks.require_dtype("x", x, checks.BF16, ndim=2)
    require_mx_weights(w_elems, w_scales)
    _, k, _ = _shapes(xb, np.asarray(w_elems), "gemm_dequant_mx")
    checks.require_finite("x", xb)
    slices = k_slices(k, k_tile, MX_BLOCK)
    w_bf16 = dequant_mx_tile(w_elems, w_scales, axis=0)
    return _finish(_chain(mmad_fp32(None, xb[:, a:b], w_bf16[a:b]) for a, b in slices), out)


def gemm_msd_int8(x: np.ndarray, wq: np.ndarray, w_scale: np.ndarray, *, passes: int = 2,
                  k_tile: int | None = None, out: str = "bf16") -> np.ndarray:
    """MSD-p with int8 weights per output channel (DESIGN.md 4.2).

    Vector: row_absmax over all of K, msd_decompose -> p int8 components (stacked pass-major as p*M rows);
    Cube: int8 x int8 mmad, exact int32 accumulation per K slice (each slice must be int32-safe);
    Vector: per slice msd_combine_passes (fp32), slices chained with add_fp32, then msd_apply_scales with
    fp32(M_r)/127 and s_w, then the output cast.
    """
    checks.require_out(out)
    w = checks.require_dtype("wq", wq, np.int8, ndim=2)
    ws = checks.require_dtype("w_scale", w_scale, np.float32, ndim=1)
    m, k, n = _shapes(np.asarray(x), w, "gemm_msd_int8")
    if ws.shape[0] != n:
        raise NumericsError(f"w_scale has {ws.shape[0]} entries, W has {n} columns (per-channel scales)")
    if w.size and w.min() < -127:
        # The int32-safe depth assumes |w| <= 127; -128 is not a symmetric code.
        raise NumericsError("tensor 'wq' contains -128; symmetric int8 weights lie in [-127, 127]")
    slices = k_slices(k, k_tile)
    require_int32_safe(max(b - a for a, b in slices), "K slice" if k_tile else "K")
    row_max = row_absmax(x)
    comps = msd_stack(msd_decompose(x, row_max, passes))
    parts = (msd_combine_passes(msd_unstack(mmad_int32(None, comps[:, a:b], w[a:b]), passes))
             for a, b in slices)
    return _finish(msd_apply_scales(_chain(parts), msd_row_scale(row_max), ws), out)


def gemm_msd_mx(x: np.ndarray, w_elems: np.ndarray, w_scales: np.ndarray, *, passes: int = 2,
                rule: str = "noclip", k_tile: int | None = None, out: str = "bf16") -> np.ndarray:
    """MSD-p with MXFP4 activation passes and MX weights (DESIGN.md 4.2, on 950).

    Vector: msd_mx_decompose (p MXFP4 passes, scales by `rule`); Cube: mmad_mx_fp32 of the stacked passes
    per K slice; Vector: per slice msd_mx_combine (fp32 sum in pass order), slices chained with add_fp32.
    """
    checks.require_out(out)
    we = require_mx_weights(w_elems, w_scales)
    m, k, n = _shapes(np.asarray(x), we, "gemm_msd_mx")
    slices = k_slices(k, k_tile, MX_BLOCK)
    comps = msd_mx_decompose(x, passes, rule=rule, axis=1)
    a_el = np.concatenate([c.elems for c in comps], axis=0)
    a_sc = np.concatenate([c.scales for c in comps], axis=0)
    parts = []
    for a, b in slices:
        c = mmad_mx_fp32(None, a_el[:, a:b], a_sc[:, a // MX_BLOCK:b // MX_BLOCK], we[a:b],
                         w_scales[a // MX_BLOCK:b // MX_BLOCK])
        parts.append(msd_mx_combine(c.reshape(len(comps), m, n)))
    return _finish(_chain(parts), out)


def gemm_mx_direct(x: np.ndarray, w_elems: np.ndarray, w_scales: np.ndarray, *, act_fmt: str = "mxfp8",
                   rule: str = "noclip", k_tile: int | None = None, out: str = "bf16") -> np.ndarray:
    """The "direct" comparison point: one MX pass of the activations (MXFP8 by default) times MX weights."""
    checks.require_out(out)
    fmt = mx_format(act_fmt)
    we = require_mx_weights(w_elems, w_scales)
    _, k, _ = _shapes(np.asarray(x), we, "gemm_mx_direct")
    slices = k_slices(k, k_tile, MX_BLOCK)
    (t,) = msd_mx_decompose(x, 1, fmt=fmt, rule=rule, axis=1)
    parts = (mmad_mx_fp32(None, t.elems[:, a:b], t.scales[:, a // MX_BLOCK:b // MX_BLOCK], we[a:b],
                          w_scales[a // MX_BLOCK:b // MX_BLOCK]) for a, b in slices)
    return _finish(_chain(parts), out)


__all__ = [
    "gemm_native_bf16", "gemm_fp64", "gemm_bf16", "gemm_dequant_int", "gemm_dequant_mx", "gemm_msd_int8",
    "gemm_msd_mx", "gemm_mx_direct", "k_slices",
]
