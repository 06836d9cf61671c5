"""Compiled (numba) kernels of the Cube's sequential fp32 accumulation, the hot loop of the numerics.

`mmad_fp32` (cube.py) defines the arithmetic: out[i, j] += a[i, kk] * b[kk, j], one fp32 multiply and
one fp32 add (round to nearest even) per kk, in ascending kk. numpy can only run that loop as one call per
kk or through a (k x m x n) product buffer, both bound by memory traffic; compiled, the accumulator block
stays in cache and the loop runs at several times the speed (benchmarks/run.py). No fast-math flags, so
LLVM neither reassociates nor reorders the adds nor fuses them with the multiplies (vectorizing over the
independent columns only). Elements are independent, so the blocking over rows
and columns cannot change a bit. tests/numerics/test_numerics_fast_paths.py checks these kernels against
the literal loop, bit for bit.

numba is imported only when the first mmad runs (cube.py), so commands without numerics do not pay for
it; `cache=True` keeps the machine code in __pycache__ between processes.
"""

from __future__ import annotations

import numba
import numpy as np

_COLS = 512   # accumulator columns per block: a decode tile's 16 rows x 512 fp32 = 32 KiB, L1-sized
_ROWS = 32    # accumulator rows per block (at most 64 KiB with _COLS)


@numba.njit(nogil=True, cache=True, boundscheck=False, inline="always")
def _add_products(out, a, row, kk, i0, i1, j0, j1):  # pragma: no cover - compiled
    """out[i, j0:j1] += a[i, kk] * row for the rows i0..i1 (row: b[kk, j0:j1] in fp32)."""
    w = j1 - j0
    for i in range(i0, i1):
        av = a[i, kk]
        o = out[i, j0:j1]
        for j in range(w):  # 0-based over slices: LLVM vectorizes this form, not range(j0, j1)
            o[j] = o[j] + av * row[j]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def accumulate_fp32(out, a, b):  # pragma: no cover - compiled; covered through mmad_fp32
    """out += a @ b, sequentially in fp32; a (m x k) and b (k x n) float32 holding bf16 values."""
    m, k = a.shape
    n = b.shape[1]
    for j0 in range(0, n, _COLS):
        j1 = min(n, j0 + _COLS)
        for i0 in range(0, m, _ROWS):
            i1 = min(m, i0 + _ROWS)
            for kk in range(k):
                _add_products(out, a, b[kk, j0:j1], kk, i0, i1, j0, j1)


@numba.njit(nogil=True, cache=True, boundscheck=False)
def accumulate_bf16_bits(out, a, b_bits):  # pragma: no cover - compiled; covered through mmad_fp32
    """accumulate_fp32 with b given as its bf16 bit patterns (uint16): each row block is widened to fp32
    (the bits shifted into the high half, exact) once and used for every row of the block, so a whole
    weight matrix is never copied to fp32."""
    m, k = a.shape
    n = b_bits.shape[1]
    wide = np.empty(_COLS, np.uint32)
    row = wide.view(np.float32)
    for j0 in range(0, n, _COLS):
        j1 = min(n, j0 + _COLS)
        for i0 in range(0, m, _ROWS):
            i1 = min(m, i0 + _ROWS)
            for kk in range(k):
                src = b_bits[kk, j0:j1]
                for j in range(j1 - j0):
                    wide[j] = np.uint32(src[j]) << np.uint32(16)
                _add_products(out, a, row, kk, i0, i1, j0, j1)
