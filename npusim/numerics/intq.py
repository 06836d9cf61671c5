"""Symmetric integer weights: int8 per output channel, int8 / int4 per group of K, and their dequant tile.

Weights W are K x N (K = reduction axis, N = output channels). A scale covers one output channel over all
of K (group_k=None) or over a group of `group_k` consecutive K (the usual 128). Codes are symmetric,
[-qmax, qmax] with qmax = 2**(bits-1) - 1 (127 for int8, 7 for int4); int4 codes are held one per int8
in memory here and packed two per byte only when counted or moved (see npusim.numerics.packing).

Scales are fp32 (4 bytes each in the packed byte count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npusim.errors import NumericsError
from npusim.numerics.checks import ACTIVATION_DTYPES, require_dtype, require_finite, require_multiple
from npusim.numerics.cube import to_bf16
from npusim.numerics.parallel import map_parts, row_parts

INT_BITS = (8, 4)
_SLAB_ELEMS = 1 << 16


def qmax(bits: int) -> int:
    if bits not in INT_BITS:
        raise NumericsError(f"integer weights must have 8 or 4 bits, got {bits!r}")
    return 2 ** (bits - 1) - 1


@dataclass(frozen=True, eq=False)
class IntWeights:
    """Quantized K x N weights. `scale` is (N,) per channel, or (K // group_k, N) per group."""

    q: np.ndarray  # int8 holding codes in [-qmax, qmax]
    scale: np.ndarray  # float32
    bits: int
    group_k: int | None

    @property
    def fmt(self) -> str:
        return f"int{self.bits}" + ("" if self.group_k is None else f"-g{self.group_k}")

    def scale_per_element(self) -> np.ndarray:
        """The fp32 scale of every weight element, K x N."""
        return expand_scale(self.scale, self.q.shape[0], self.group_k)

    def values_fp64(self) -> np.ndarray:
        """The exact real values the codes stand for (q * s in float64 is exact)."""
        return int_values_fp64(self.q, self.scale, self.group_k)


def _check_scale(scale: np.ndarray, k: int, group_k: int | None) -> None:
    if group_k is None:
        if scale.ndim != 1:
            raise NumericsError(f"per-channel scale must be 1-D (N,), got shape {scale.shape}")
        return
    require_multiple("K (tile rows)", k, group_k)
    if scale.ndim != 2 or scale.shape[0] != k // group_k:
        raise NumericsError(f"group scale for {k} rows in groups of {group_k} must have shape "
                            f"({k // group_k}, N), got {scale.shape}")


def expand_scale(scale: np.ndarray, k: int, group_k: int | None) -> np.ndarray:
    """Broadcast (N,) or (k // group_k, N) scales to k x N."""
    scale = np.asarray(scale)
    _check_scale(scale, k, group_k)
    if group_k is None:
        return np.broadcast_to(scale[None, :], (k, scale.shape[0]))
    return np.repeat(scale, group_k, axis=0)


def _scaled(q: np.ndarray, scale: np.ndarray, group_k: int | None, dtype: type) -> np.ndarray:
    """dtype(q) * scale per element (one multiply in `dtype`), K x N, without a K x N copy of the scales.

    The caller has checked the scale's shape (_check_scale) and that it covers q's N columns.
    """
    if group_k is None:
        return np.multiply(q, scale[None, :], dtype=dtype)
    k, n = q.shape
    return np.multiply(q.reshape(k // group_k, group_k, n), scale[:, None, :], dtype=dtype).reshape(k, n)


def int_values_fp64(q: np.ndarray, scale: np.ndarray, group_k: int | None) -> np.ndarray:
    """q * s in float64, K x N: exact (<= 8-bit codes times fp32 scales), the real values the codes stand for.

    The scales are cast to float64 before they meet the K x N codes, so only (N,) or (K / group, N) of them
    are converted.
    """
    q = np.asarray(q)
    s64 = np.asarray(scale).astype(np.float64)
    _check_scale(s64, q.shape[0], group_k)
    if s64.shape[-1] != q.shape[1]:
        raise NumericsError(f"scales cover {s64.shape[-1]} columns, the codes have {q.shape[1]}")
    return _scaled(q, s64, group_k, np.float64)


def quantize_weights_int(w: np.ndarray, *, bits: int = 8, group_k: int | None = None,
                         name: str = "w") -> IntWeights:
    """Symmetric absmax quantization of bf16 / fp16 / fp32 K x N weights (offline, not a simulated op).

    s = fp32(amax) / qmax in fp32 (amax over the channel or group); q = round_half_away(w / s) with w / s
    formed in float64, clipped to +-qmax (reachable only through the fp32 rounding of s). An all-zero
    channel or group gets s = 0 and q = 0.
    """
    top = qmax(bits)
    w = require_dtype(name, w, *ACTIVATION_DTYPES, ndim=2)
    k, n = w.shape
    if group_k is not None:
        if isinstance(group_k, bool) or not isinstance(group_k, int) or group_k <= 0:
            raise NumericsError(f"group_k must be a positive integer, got {group_k!r}")
        require_multiple(f"K of {name!r}", k, group_k)
    w32 = w.astype(np.float32, copy=False)  # exact for bf16 / fp16 / fp32
    step = group_k or 1
    parts = row_parts(k, n, step)   # a 70B layer's weights are ~0.9 G elements: a few threads share the passes

    # max |w| as max(max w, -min w): the same value (negation is exact) without a |w| temporary; the
    # outer abs turns an all-zero group's -0.0 into the +0.0 that abs gives. max and min propagate NaN and
    # Inf, so a finite amax means finite weights (require_finite then names the first bad element).
    def amax_of(part):
        r0, r1 = part
        if group_k is None:
            return w32[r0:r1].max(axis=0, keepdims=True), w32[r0:r1].min(axis=0, keepdims=True)
        g = w32[r0:r1].reshape((r1 - r0) // step, step, n)
        return g.max(axis=1), g.min(axis=1)

    if k:
        found = map_parts(parts, amax_of)
        hi, lo = (np.concatenate([f[j] for f in found]) for j in (0, 1))
        if group_k is None:
            hi, lo = hi.max(axis=0), lo.min(axis=0)
        amax = np.abs(np.maximum(hi, -lo))
        if not np.isfinite(amax).all():
            require_finite(name, w)
    else:
        amax = np.zeros(n if group_k is None else (0, n), np.float32)
    scale = amax.astype(np.float32) / np.float32(top)
    # An all-zero group has w = 0, so dividing by 1 instead of 0 gives its q = 0.
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float64)
    q = np.empty((k, n), dtype=np.int8)
    rows = max(step, (_SLAB_ELEMS // max(n, 1)) // step * step)

    def codes(part):
        a, b = part
        quot, half = (np.empty((min(rows, b - a), n), dtype=np.float64) for _ in range(2))
        for r0 in range(a, b, rows):
            # Slabs of rows keep the float64 temporaries in cache (same result as one whole-tensor pass).
            r1 = min(r0 + rows, b)
            s_rows = safe[None, :] if group_k is None else np.repeat(safe[r0 // step:r1 // step], step, axis=0)
            x = np.divide(w32[r0:r1], s_rows, out=quot[: r1 - r0])  # float64 quotient, one rounding
            q[r0:r1] = _quotient_codes(x, half[: r1 - r0], top)

    map_parts(parts, codes)
    return IntWeights(q=q, scale=scale.astype(np.float32), bits=bits, group_k=group_k)


def _quotient_codes(x: np.ndarray, half: np.ndarray, top: int) -> np.ndarray:
    """clip(round_half_away(x), -top, top) for x = fl64(w / s), w and s fp32; x is overwritten.

    Computed as trunc(x + copysign(1/2, x)), which is round_half_away(x) for every x except those whose
    x + 1/2 rounds up to the next integer in float64: x = +-(1/2 - 2^-54) (for |x| >= 1/2 the sum is exact
    or stays inside the same integer interval). Such an x is never a quotient of fp32 values: w / s is
    either a half-integer or at least 2^-26 away from every one (|w/s - (j + 1/2)| = |2w - (2j+1)s| / 2s
    with 2w and (2j+1)s multiples of 2^(e_s - 24), or of 2^-149 for subnormal s, while 2s < 2^(e_s + 2)),
    and float64 moves the quotient by at most 2^-46 at |x| <= 128. Clipping x first gives the same codes.
    tests/numerics/test_numerics_fast_paths.py checks this against round_half_away, near-ties included.
    """
    np.clip(x, -top, top, out=x)
    np.copysign(0.5, x, out=half)
    np.add(x, half, out=x)
    return np.trunc(x, out=x)


def dequant_int_tile(q_tile: np.ndarray, scale_tile: np.ndarray, group_k: int | None = None) -> np.ndarray:
    """Vector dequant of a weight tile: bf16(fp32(q) * s), the multiply and the cast each rounded to nearest even.

    q_tile is k_t x n_t int8; scale_tile is (n_t,) per channel or (k_t // group_k, n_t) per group (the tile
    must start on a group boundary). Elementwise, so any tiling of K and N gives the same bits.
    """
    q, s = check_dequant_int(q_tile, scale_tile, group_k)
    return to_bf16(_scaled(q, s, group_k, np.float32))


def check_dequant_int(q_tile: np.ndarray, scale_tile: np.ndarray, group_k: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The checks of dequant_int_tile (dtypes, finite scales, shapes); returns (codes, scales) as arrays."""
    q = require_dtype("q_tile", q_tile, np.int8, ndim=2)
    s = require_dtype("scale_tile", scale_tile, np.float32)
    require_finite("scale_tile", s)
    k, n = q.shape
    _check_scale(s, k, group_k)
    if s.shape[-1] != n:
        raise NumericsError(f"scale tile covers shape {(k, s.shape[-1])}, weight tile is {q.shape}")
    return q, s
