"""The two rounding rules of the library, each defined once.

- Integer codes (int8 / int4 weights, MSD components, softmax-probability components) are rounded by
  `round_half_away`: to the nearest integer, ties away from zero. That is what the Ascend vector unit's
  float -> int conversion does in its "round" mode (CAST_ROUND), which the CANN MSD kernels use.
- Minifloat elements (E2M1, E4M3 of the OCP MX formats) are rounded by `round_to_minifloat`: to nearest,
  ties to even (the OCP MX conversion rule), saturating at the largest finite value.

Both take float64 and are exact: the only rounding is the one the rule defines. ml_dtypes is not used for
the minifloat rounding because its float64 -> float4/float8 casts round through float32 first (double
rounding: 0.25 + 2**-40 becomes 0 instead of 0.5) and its E4M3 cast turns overflow into NaN.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Whole-tensor temporaries of a 4096 x 4096 weight cost more in page faults than in arithmetic; working
# through cache-sized chunks makes the elementwise rules ~10x faster with identical results.
_CHUNK = 1 << 15
_EXP_FIELD = np.int64(0x7FF0000000000000)


def _chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    src, dst = x.reshape(-1), out.reshape(-1)
    for start in range(0, src.size, _CHUNK):
        dst[start : start + _CHUNK] = fn(src[start : start + _CHUNK])
    return out


def half_away_into(x: np.ndarray, out: np.ndarray, tmp: np.ndarray, *, signed_zero: bool = True) -> np.ndarray:
    """out = round_half_away(x) for finite float64 x, through two float64 buffers of x's shape (neither x).

    t = trunc(x) and f = x - t are exact (|f| < 1); trunc(2 f) is +-1 exactly when |f| >= 1/2, so
    t + trunc(2 f) is the nearest integer with ties away from zero, and the add is exact (t + 1 <= 2**52
    whenever f != 0). The one zero whose sign that sum loses (x = -0.0) is restored by copysign unless
    `signed_zero` is False (callers that store integer codes).
    """
    np.trunc(x, out=out)
    np.subtract(x, out, out=tmp)
    np.add(tmp, tmp, out=tmp)
    np.trunc(tmp, out=tmp)
    np.add(out, tmp, out=out)
    if signed_zero:
        np.copysign(out, x, out=out)
    return out


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Nearest integer, ties away from zero, as float64 (exact for every float64 input)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty_like(x)
    src, dst = x.reshape(-1), out.reshape(-1)
    tmp = np.empty(min(src.size, _CHUNK), dtype=np.float64)
    for start in range(0, src.size, _CHUNK):
        s = src[start : start + _CHUNK]
        half_away_into(s, dst[start : start + _CHUNK], tmp[: s.size])
    bad = ~np.isfinite(x)
    if bad.any():
        out[bad] = x[bad]  # +-Inf and NaN round to themselves (the sum above makes them NaN)
    return out


def round_to_minifloat(v: np.ndarray, *, mant_bits: int, min_normal_exp: int, max_value: float) -> np.ndarray:
    """Round float64 values onto a binary minifloat grid: nearest, ties to even, saturating at +-max_value.

    The grid has `mant_bits` fraction bits, normal binades from 2**min_normal_exp up, and subnormals (step
    2**(min_normal_exp - mant_bits)) below. Returns float64 values that are exactly on the grid.
    """

    floor_quantum = 2.0 ** (min_normal_exp - mant_bits)
    to_quantum = 2.0 ** -mant_bits

    def rule(x: np.ndarray) -> np.ndarray:
        mag = np.abs(x)
        # Keeping only the exponent field of a float64 gives 2**floor(log2 mag) (0 for zero): the binade.
        binade = (mag.view(np.int64) & _EXP_FIELD).view(np.float64)
        quantum = np.maximum(binade * to_quantum, floor_quantum)
        # mag / quantum is exact (a power-of-two scaling); np.rint rounds ties to even.
        q = np.minimum(np.rint(mag / quantum) * quantum, max_value)
        return np.copysign(q, x)

    return _chunked(rule, v)
