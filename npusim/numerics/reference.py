"""Whole-tensor reference GEMMs, built on the same Cube primitives the simulated ops call."""

from __future__ import annotations

import numpy as np

from npusim.errors import NumericsError
from npusim.numerics import checks
from npusim.numerics.cube import add_fp32, mmad_fp32, mmad_int32, mmad_mx_fp32, to_bf16
from npusim.numerics.intq import check_dequant_int, dequant_int_tile
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
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 2 or w.ndim != 2:
        return x.astype(np.float64) @ w.astype(np.float64)
    return matmul_fp64_columns(x.astype(np.float64), lambda c0, c1: w[:, c0:c1].astype(np.float64), w.shape[1])


_TRUTH_BLOCK = 1 << 18  # float64 weight elements per block of columns of the FP64 truths (2 MiB)


def matmul_fp64_columns(x64: np.ndarray, w_cols, n: int) -> np.ndarray:
    """x64 @ W (float64) for K x n weights made a block of columns at a time, W[:, c0:c1] = w_cols(c0, c1).

    The column blocks keep the float64 weights in cache instead of a K x N float64 temporary. Each output
    column is the same dot products as in one matmul (BLAS computes the columns of C independently:
    bit-identical to the whole-tensor product with the OpenBLAS numpy ships, and within a few ulps with
    any BLAS), which is all an FP64 ground truth needs.
    """
    m, k = x64.shape
    out = np.empty((m, n), dtype=np.float64)
    step = max(1, _TRUTH_BLOCK // max(1, k))
    for c0 in range(0, n, step):
        c1 = min(c0 + step, n)
        out[:, c0:c1] = x64 @ w_cols(c0, c1)
    return out


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


_BLOCK_ELEMS = 1 << 20  # weight elements dequantized at a time by the dequant references
_ACC_ELEMS = 1 << 16  # accumulator elements (M x a block of N) they work on at a time


def _mmad_blocks(xb: np.ndarray, a: int, b: int, n: int, w_block, align: int) -> np.ndarray:
    """mmad_fp32(None, xb[:, a:b], W[a:b]) for K x n weights whose bf16 blocks W[r0:r1, c0:c1] =
    w_block(r0, r1, c0, c1) are made a block at a time: blocks of columns (independent outputs), and in
    each, blocks of rows starting on multiples of `align` from a, with the accumulator chained through them
    -- the same per-k fp32 sequence as one call (cube.mmad_fp32), so the same bits, and the dequantized
    weights are never a K x N temporary."""
    m = xb.shape[0]
    cols = min(max(1, n), max(256, _ACC_ELEMS // max(1, m)))
    rows = max(align, _BLOCK_ELEMS // cols // align * align)
    out = np.zeros((m, n), dtype=np.float32)
    for c0 in range(0, n, cols):
        c1 = min(c0 + cols, n)
        acc = None
        for r0 in range(a, b, rows):
            r1 = min(r0 + rows, b)
            acc = mmad_fp32(acc, xb[:, r0:r1], w_block(r0, r1, c0, c1))
        if acc is not None:
            out[:, c0:c1] = acc
    return out


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
    _, k, n = _shapes(xb, np.asarray(wq), "gemm_dequant_int")
    checks.require_finite("x", xb)
    slices = k_slices(k, k_tile, group_k or 1)
    wq, w_scale = check_dequant_int(wq, w_scale, group_k)  # the whole tensor's errors, before any block

    def w_block(r0, r1, c0, c1):
        s = w_scale[c0:c1] if group_k is None else w_scale[r0 // group_k:r1 // group_k, c0:c1]
        return dequant_int_tile(wq[r0:r1, c0:c1], s, group_k)

    return _finish(_chain(_mmad_blocks(xb, a, b, n, w_block, group_k or 1) for a, b in slices), out)


def gemm_dequant_mx(x: np.ndarray, w_elems: np.ndarray, w_scales: np.ndarray, *, k_tile: int | None = None,
                    out: str = "bf16") -> np.ndarray:
    """Dequant baseline, MX weights (MXFP4 W4A16 on 950): W_bf16 = dequant_mx_tile, then bf16 mmad."""
    checks.require_out(out)
    xb = checks.require_dtype("x", x, checks.BF16, ndim=2)
    require_mx_weights(w_elems, w_scales)
    _, k, n = _shapes(xb, np.asarray(w_elems), "gemm_dequant_mx")
    checks.require_finite("x", xb)
    slices = k_slices(k, k_tile, MX_BLOCK)
    el, sc = np.asarray(w_elems), np.asarray(w_scales)

    def w_block(r0, r1, c0, c1):
        return dequant_mx_tile(el[r0:r1, c0:c1], sc[r0 // MX_BLOCK:r1 // MX_BLOCK, c0:c1], axis=0)

    return _finish(_chain(_mmad_blocks(xb, a, b, n, w_block, MX_BLOCK) for a, b in slices), out)


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
    "gemm_msd_mx", "gemm_mx_direct", "k_slices", "matmul_fp64_columns",
]
