"""Error metrics and effective-bits definitions (formulas also in docs/numerics.md).

All take the reference x and the approximation x_hat (any float dtype; computed in float64).
e = x_hat - x.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from npusim.errors import NumericsError


def _err(x: np.ndarray, x_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = np.asarray(x, dtype=np.float64)
    xh = np.asarray(x_hat, dtype=np.float64)
    if x64.shape != xh.shape:
        raise NumericsError(f"metric: shapes differ ({x64.shape} vs {xh.shape})")
    return x64, xh - x64


def rel_l2(x: np.ndarray, x_hat: np.ndarray) -> float:
    """||e||_2 / ||x||_2 (Frobenius norms for matrices)."""
    x64, e = _err(x, x_hat)
    norm = float(np.linalg.norm(x64))
    if norm == 0.0:
        raise NumericsError("rel_l2: the reference is all zeros")
    return float(np.linalg.norm(e)) / norm


def max_abs(x: np.ndarray, x_hat: np.ndarray) -> float:
    """max |e|."""
    _, e = _err(x, x_hat)
    return float(np.abs(e).max()) if e.size else 0.0


def max_bound_ratio(x: np.ndarray, x_hat: np.ndarray, bound: np.ndarray) -> float:
    """max over elements of |e| / bound, `bound` broadcast to x's shape (the row's or block's stated bound).

    A zero bound with a nonzero error gives inf; a zero bound with a zero error counts as 0.
    """
    _, e = _err(x, x_hat)
    b = np.broadcast_to(np.asarray(bound, dtype=np.float64), e.shape)
    a = np.abs(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b > 0, a / np.where(b > 0, b, 1.0), np.where(a > 0, np.inf, 0.0))
    return float(ratio.max()) if ratio.size else 0.0


def bits_range_over_max_err(x: np.ndarray, x_hat: np.ndarray, group_max: np.ndarray) -> float:
    """log2(M / eps_max) of the worst scaling group: -log2 max(|e| / M), M = the group's max |x| broadcast.

    The paper's definition for int8 MSD (M = row max): 8 / 16 / 24 bits for 1 / 2 / 3 passes.
    """
    return -math.log2(max_bound_ratio(x, x_hat, group_max))


def bits_rel_l2(x: np.ndarray, x_hat: np.ndarray) -> float:
    """-log2(||e|| / ||x||)."""
    return -math.log2(rel_l2(x, x_hat))


def bits_sqnr(x: np.ndarray, x_hat: np.ndarray) -> float:
    """ENOB from the signal-to-quantization-noise ratio: (SQNR_dB - 1.76) / 6.02, SQNR_dB = 10 log10(sum x^2 / sum e^2).

    The ADC convention (a full-scale sine's SQNR is 6.02 N + 1.76 dB); equals bits_rel_l2 - 0.292.
    """
    sqnr_db = 20.0 * math.log10(1.0 / rel_l2(x, x_hat))
    return (sqnr_db - 1.76) / 6.02


EFFECTIVE_BITS: dict[str, Callable[..., float]] = {
    "log2_range_over_max_err": bits_range_over_max_err,
    "neg_log2_rel_l2": bits_rel_l2,
    "sqnr_enob": bits_sqnr,
}
