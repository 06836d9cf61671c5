"""Input validation shared by every public entry point: one clear NumericsError, never an assert."""

from __future__ import annotations

import numpy as np
import ml_dtypes

from npusim.errors import NumericsError

BF16 = np.dtype(ml_dtypes.bfloat16)
FP4 = np.dtype(ml_dtypes.float4_e2m1fn)
# Activation types the vector unit reads. All have significands of at most 24 bits, which is what makes
# the float64 arithmetic of the decompositions exact (see docs/numerics.md, "Exactness").
ACTIVATION_DTYPES = (BF16, np.dtype(np.float16), np.dtype(np.float32))
MAX_PASSES = 4


def dtype_name(dt: np.dtype) -> str:
    return "bf16" if dt == BF16 else dt.name


def require_finite(name: str, x: np.ndarray) -> None:
    """Refuse NaN or +-Inf, naming the tensor and the first bad index (row-major order)."""
    a = np.asarray(x)
    if a.dtype.kind in "biu" or a.dtype == FP4:  # E2M1 has no NaN or Inf encodings
        return
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(float(a[idx])) else "Inf"
        raise NumericsError(f"tensor {name!r} has {what} at index {idx}; non-finite inputs are refused")


def require_activation(name: str, x: np.ndarray, ndim: int | None = 2) -> np.ndarray:
    """Check dtype (bf16 / fp16 / fp32), rank and finiteness; return the exact float64 values."""
    a = np.asarray(x)
    if a.dtype not in ACTIVATION_DTYPES:
        raise NumericsError(
            f"tensor {name!r} has dtype {dtype_name(a.dtype)}; activations must be bf16, float16 or float32 "
            "(cast explicitly, e.g. x.astype(np.float32), so that any rounding is yours)")
    if ndim is not None and a.ndim != ndim:
        raise NumericsError(f"tensor {name!r} must have {ndim} dimensions, got shape {a.shape}")
    require_finite(name, a)
    # Via float32 (exact for all three types): ml_dtypes' direct bf16 -> float64 cast is ~6x slower.
    return a.astype(np.float32).astype(np.float64)


def require_dtype(name: str, x: np.ndarray, *dtypes: np.dtype, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    allowed = [np.dtype(d) for d in dtypes]
    if a.dtype not in allowed:
        raise NumericsError(f"tensor {name!r} has dtype {dtype_name(a.dtype)}; expected "
                            + " or ".join(dtype_name(d) for d in allowed))
    if ndim is not None and a.ndim != ndim:
        raise NumericsError(f"tensor {name!r} must have {ndim} dimensions, got shape {a.shape}")
    return a


def require_passes(passes: int) -> int:
    if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or not 1 <= passes <= MAX_PASSES:
        raise NumericsError(f"passes must be an integer from 1 to {MAX_PASSES}, got {passes!r}")
    return int(passes)


def require_multiple(what: str, n: int, of: int) -> None:
    if n % of:
        raise NumericsError(f"{what} = {n} is not a multiple of {of}")


def require_out(out: str) -> str:
    if out not in ("bf16", "fp32"):
        raise NumericsError(f"out must be 'bf16' or 'fp32', got {out!r}")
    return out
