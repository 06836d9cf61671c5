"""Names of element types as the graph and configs spell them, mapped to numpy / ml_dtypes types."""

from __future__ import annotations

import ml_dtypes
import numpy as np

_NP = {
    "fp32": np.dtype(np.float32),
    "fp64": np.dtype(np.float64),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "fp16": np.dtype(np.float16),
    "int32": np.dtype(np.int32),
    "int8": np.dtype(np.int8),
    "fp8": np.dtype(ml_dtypes.float8_e4m3fn),
    "fp4": np.dtype(ml_dtypes.float4_e2m1fn),
    # OCP MX block scales: one byte, a power of two 2**(code - 127).
    "e8m0": np.dtype(ml_dtypes.float8_e8m0fnu),
    # Sub-byte ints are held one per int8 in memory; the traffic model counts their packed size.
    "int4": np.dtype(np.int8),
}


def np_dtype(name: str) -> np.dtype:
    try:
        return _NP[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(_NP)})") from None
