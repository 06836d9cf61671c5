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
from npusim.numerics.rounding import round_half_away

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
        return self.q.astype(np.float64) * self.scale_per_element().astype(np.float64)


def expand_scale(scale: np.ndarray, k: int, group_k: int | None) -> np.ndarray:
    """Broadcast (N,) or (k // group_k, N) scales to k x N."""
    scale = np.asarray(scale)
    if group_k is None:
        if scale.ndim != 1:
            raise NumericsError(f"per-channel scale must be 1-D (N,), got shape {scale.shape}")
        return np.broadcast_to(scale[None, :], (k, scale.shape[0]))
    require_multiple("K (tile rows)", k, group_k)
    if scale.ndim != 2 or scale.shape[0] != k // group_k:
        raise NumericsError(f"group scale for {k} rows in groups of {group_k} must have shape "
                            f"({k // group_k}, N), got {scale.shape}")
    return np.repeat(scale, group_k, axis=0)


def quantize_weights_int(w: np.ndarray, *, bits: int = 8, group_k: int | None = None,
                         name: str = "w") -> IntWeights:
    """Symmetric absmax quantization of bf16 / fp16 / fp32 K x N weights (offline, not a simulated op).

    s = fp32(amax) / qmax in fp32 (amax over the channel or group); q = round_half_away(w / s) with w / s
    formed in float64, clipped to +-qmax (reachable only through the fp32 rounding of s). An all-zero
    channel or group gets s = 0 and q = 0.
    """
    top = qmax(bits)
    w = require_dtype(name, w, *ACTIVATION_DTYPES, ndim=2)
    require_finite(name, w)
    k, n = w.shape
    if group_k is not None:
        if isinstance(group_k, bool) or not isinstance(group_k, int) or group_k <= 0:
            raise NumericsError(f"group_k must be a positive integer, got {group_k!r}")
        require_multiple(f"K of {name!r}", k, group_k)
    w32 = w.astype(np.float32)  # exact for bf16 / fp16 / fp32
    if group_k is None:
        amax = np.abs(w32).max(axis=0) if k else np.zeros(n, np.float32)
    else:
        amax = np.abs(w32).reshape(k // group_k, group_k, n).max(axis=1)
    scale = amax.astype(np.float32) / np.float32(top)
    # An all-zero group has w = 0, so dividing by 1 instead of 0 gives its q = 0.
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float64)
    q = np.empty((k, n), dtype=np.int8)
    step = group_k or 1
    rows = max(step, (_SLAB_ELEMS // max(n, 1)) // step * step)
    for r0 in range(0, k, rows):
        # Slabs of rows keep the float64 temporaries in cache (same result as one whole-tensor pass).
        r1 = min(r0 + rows, k)
        s_rows = safe[None, :] if group_k is None else np.repeat(safe[r0 // step:r1 // step], step, axis=0)
        codes = round_half_away(w32[r0:r1].astype(np.float64) / s_rows)
        q[r0:r1] = np.clip(codes, -top, top)
    return IntWeights(q=q, scale=scale.astype(np.float32), bits=bits, group_k=group_k)


def dequant_int_tile(q_tile: np.ndarray, scale_tile: np.ndarray, group_k: int | None = None) -> np.ndarray:
    """Vector dequant of a weight tile: bf16(fp32(q) * s), the multiply and the cast each rounded to nearest even.

    q_tile is k_t x n_t int8; scale_tile is (n_t,) per channel or (k_t // group_k, n_t) per group (the tile
    must start on a group boundary). Elementwise, so any tiling of K and N gives the same bits.
    """
    q = require_dtype("q_tile", q_tile, np.int8, ndim=2)
    s = require_dtype("scale_tile", scale_tile, np.float32)
    require_finite("scale_tile", s)
    s_full = expand_scale(s, q.shape[0], group_k)
    if s_full.shape != q.shape:
        raise NumericsError(f"scale tile covers shape {s_full.shape}, weight tile is {q.shape}")
    return to_bf16(q.astype(np.float32) * s_full)
