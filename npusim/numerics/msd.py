"""Multi-Scale Dequant, int8 activations: per-row decomposition into p int8 passes, and recombination.

Per row r with M_r = max|x_r| (DESIGN.md section 4.2):
    a = 127 x / M_r,  A_1 = round(a),  A_2 = round(254 (a - A_1)),  A_3 = round(254 (254 (a - A_1) - A_2)), ...
    x ~ (M_r / 127) * (A_1 + A_2/254 + ... + A_p/254^(p-1)),  |error| <= M_r / (2 * 127 * 254^(p-1))
i.e. M/254, M/64516, M/16387064 for p = 1, 2, 3.
`round` is round_half_away (ties away from zero). The components are the exact-arithmetic ones: the
residual is carried in the x domain, R_1 = 127 x, R_{i+1} = 254 (R_i - A_i M), A_i = round(R_i / M),
and for inputs with <= 24-bit significands every R_i is exact in float64 and R_i / M cannot round across
a half-integer (docs/numerics.md, "Exactness"), so every |A_i| <= 127 and the bound holds with no slack.

The Vector unit's recombination (fp32, each operation rounded to nearest even):
    acc = fp32(C_1); acc = acc + fp32(C_i) * fp32(254^-(i-1)) for i = 2..p      (msd_combine_passes)
    y = (acc * row_scale) * w_scale, row_scale = fp32(M_r) / fp32(127)            (msd_apply_scales)
"""

from __future__ import annotations

import numpy as np

from npusim.errors import NumericsError
from npusim.numerics.checks import require_activation, require_dtype, require_finite, require_passes
from npusim.numerics.rounding import round_half_away

INT8_MAX = 127
RADIX = 254  # 2 * 127: each pass refines the previous pass's half-step into 254 steps
INT32_MAX = 2**31 - 1


def msd_bound_factor(passes: int) -> float:
    """The int8 MSD error bound as a fraction of the row max: 1 / (2 * 127 * 254^(p-1))."""
    return 1.0 / (2 * INT8_MAX * RADIX ** (require_passes(passes) - 1))


def row_absmax(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Per-row max |x| as float32 (exact: the max of bf16 / fp16 / fp32 values is one of them)."""
    x64 = require_activation(name, x, ndim=2)
    if x64.shape[1] == 0:
        return np.zeros(x64.shape[0], dtype=np.float32)
    return np.abs(x64).max(axis=1).astype(np.float32)


def msd_decompose(x: np.ndarray, row_max: np.ndarray, passes: int, name: str = "x") -> np.ndarray:
    """Decompose activation rows into p int8 components, shape (p, m, k), using the given row maxima.

    `row_max` (m,) float32 is the max |x| over the row's full K (row_absmax of the whole row), so that a
    K tile decomposes exactly as the whole row would. Elementwise given row_max: any tiling of M and K
    yields the same codes.
    """
    p = require_passes(passes)
    x64 = require_activation(name, x, ndim=2)
    m64 = _row_max64(row_max, x64, name)
    return _decompose(x64, m64, p)


def msd_decompose_fixed(probs: np.ndarray, passes: int, name: str = "p") -> np.ndarray:
    """Decompose softmax probabilities P in [0, 1] with the fixed scale 127 (M = 1, no row reduction).

    P ~ (1/127) (A_1 + A_2/254 + ...), same bound with M = 1. Values outside [0, 1] are refused, not clipped.
    """
    p = require_passes(passes)
    x64 = require_activation(name, probs, ndim=2)
    bad = (x64 < 0) | (x64 > 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NumericsError(f"tensor {name!r} has {x64[idx]!r} at index {idx}; probabilities must lie in [0, 1]")
    return _decompose(x64, np.ones(x64.shape[0]), p)


def msd_reconstruct_fp64(components: np.ndarray, row_max: np.ndarray) -> np.ndarray:
    """(M_r / 127) * sum_i A_i / 254^(i-1) in float64 (analysis only; the hardware never forms it)."""
    c = np.asarray(components, dtype=np.float64)
    weights = float(RADIX) ** -np.arange(c.shape[0], dtype=np.float64)
    total = np.tensordot(weights, c, axes=(0, 0))
    return total * (np.asarray(row_max, dtype=np.float64)[:, None] / INT8_MAX)


def msd_stack(components: np.ndarray) -> np.ndarray:
    """(p, m, k) -> (p*m, k), pass-major: the p*m rows the Cube multiplies by the weights in one go."""
    c = np.asarray(components)
    return c.reshape(c.shape[0] * c.shape[1], c.shape[2])


def msd_unstack(partials: np.ndarray, passes: int) -> np.ndarray:
    """(p*m, n) pass-major partials -> (p, m, n)."""
    c = np.asarray(partials)
    p = require_passes(passes)
    if c.ndim != 2 or c.shape[0] % p:
        raise NumericsError(f"stacked partials of shape {c.shape} do not split into {p} passes")
    return c.reshape(p, c.shape[0] // p, c.shape[1])


def msd_row_scale(row_max: np.ndarray) -> np.ndarray:
    """fp32(M_r) / 127, one fp32 division per row (the fixed-scale P decomposition uses M_r = 1)."""
    return np.asarray(row_max, dtype=np.float32) / np.float32(INT8_MAX)


def msd_combine_passes(partials: np.ndarray) -> np.ndarray:
    """Vector: fp32(C_1) + fp32(C_2) * fp32(1/254) + ... ; partials (p, m, n) int32 -> (m, n) fp32.

    Every operation is an fp32 operation rounded to nearest even, in pass order; fp32(C_i) rounds when
    |C_i| > 2**24. This is the recombination of one K slice (one chain of int32 accumulation).
    """
    c = require_dtype("partials", partials, np.int32, ndim=3)
    require_passes(c.shape[0])
    acc = c[0].astype(np.float32)
    for i in range(1, c.shape[0]):
        weight = np.float32(1.0 / RADIX**i)  # RADIX**i is exact in float64; one rounding to fp32
        acc = acc + c[i].astype(np.float32) * weight
    return acc


def msd_apply_scales(acc: np.ndarray, row_scale: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """Vector: (acc * row_scale[:, None]) * w_scale[None, :], fp32, each multiply rounded to nearest even."""
    a = require_dtype("acc", acc, np.float32, ndim=2)
    rs = require_dtype("row_scale", row_scale, np.float32, ndim=1)
    ws = require_dtype("w_scale", w_scale, np.float32, ndim=1)
    require_finite("w_scale", ws)
    if rs.shape[0] != a.shape[0] or ws.shape[0] != a.shape[1]:
        raise NumericsError(f"scales ({rs.shape[0]} rows, {ws.shape[0]} columns) do not match acc {a.shape}")
    return (a * rs[:, None]) * ws[None, :]


def msd_recombine(partials: np.ndarray, row_scale: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """Vector recombination of one K slice: msd_apply_scales(msd_combine_passes(partials), ...), fp32."""
    return msd_apply_scales(msd_combine_passes(partials), row_scale, w_scale)


def int32_safe_k(a_max: int = INT8_MAX, b_max: int = INT8_MAX) -> int:
    """Largest K with a_max * b_max * K <= 2**31 - 1: no int32 accumulation of K products can overflow."""
    return INT32_MAX // (a_max * b_max)


def require_int32_safe(k: int, what: str = "K", a_max: int = INT8_MAX, b_max: int = INT8_MAX) -> None:
    limit = int32_safe_k(a_max, b_max)
    if k > limit:
        raise NumericsError(
            f"{what} = {k} exceeds the int32-safe accumulation depth {limit} "
            f"({a_max}*{b_max}*K must stay below 2**31); use a K slice (k_tile) of at most {limit}")


def _row_max64(row_max: np.ndarray, x64: np.ndarray, name: str) -> np.ndarray:
    rm = require_dtype("row_max", row_max, np.float32, ndim=1)
    if rm.shape[0] != x64.shape[0]:
        raise NumericsError(f"row_max has {rm.shape[0]} entries, {name!r} has {x64.shape[0]} rows")
    m64 = rm.astype(np.float64)
    if not np.isfinite(m64).all() or (m64 < 0).any():
        raise NumericsError("row_max must be finite and non-negative")
    if x64.size:
        over = np.abs(x64) > m64[:, None]
        if over.any():
            r, c = (int(i) for i in np.argwhere(over)[0])
            raise NumericsError(f"tensor {name!r}: |x[{r}, {c}]| = {abs(x64[r, c])!r} exceeds row_max[{r}] = "
                                f"{m64[r]!r}; row_max must be the max over the row's full K")
    return m64


def _decompose(x64: np.ndarray, m64: np.ndarray, passes: int) -> np.ndarray:
    m = m64[:, None]
    safe_m = np.where(m > 0, m, 1.0)  # a zero row has x = 0, so R = 0 and every A is 0
    out = np.empty((passes,) + x64.shape, dtype=np.int8)
    r = INT8_MAX * x64  # exact
    for i in range(passes):
        a = round_half_away(r / safe_m)  # the only rounding; cannot cross a half-integer (docstring)
        out[i] = a
        if i + 1 < passes:
            r = RADIX * (r - a * m)  # exact for p <= 4 and <= 24-bit inputs
    return out
