"""Cube (matrix unit) arithmetic, defined once for the simulator and the references.

Semantics chosen (documented in docs/numerics.md):
- bf16 x bf16 -> fp32: every product is exact in fp32 (8-bit x 8-bit significands), and products are
  added to the fp32 accumulator one k at a time, in ascending k, with round-to-nearest-even. The result
  of an element therefore depends only on its row, its column and the start value of the accumulator,
  never on how M, N or K were tiled, so a tiled schedule and a whole-tensor reference agree bit for bit
  whenever they chain the accumulator the same way.
- int8 x int8 -> int32: exact integer arithmetic (order-free); callers guard K against overflow.
"""

from __future__ import annotations

import numpy as np
import ml_dtypes

BF16 = np.dtype(ml_dtypes.bfloat16)


# Products per block of the k loop in mmad_fp32: about this many fp32 elements (~256 KiB) stay in cache.
_PRODUCT_BLOCK = 1 << 16


def mmad_fp32(acc: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return acc + a @ b with a (m x k) and b (k x n) in bf16, accumulated sequentially in fp32.

    `acc` is not modified; None means a zero accumulator (the mmad's "init" flag).
    """
    a32 = np.asarray(a).astype(np.float32, copy=False)
    b32 = np.asarray(b).astype(np.float32, copy=False)
    m, k = a32.shape
    k2, n = b32.shape
    if k != k2:
        raise ValueError(f"mmad: inner dimensions differ ({k} vs {k2})")
    out = np.zeros((m, n), dtype=np.float32) if acc is None else np.array(acc, dtype=np.float32)
    if out.size == 0:
        return out
    # Products a[:, kk] * b[kk] of a block of k at once, as (k, m, n), each an fp32 multiply (exact for
    # bf16 operands in fp32's normal range); then one fp32 add (RNE) per k into the accumulator, in
    # ascending k -- the fixed order is the point. Same operations, in the same order, as
    # `for kk in range(k): out += a32[:, kk:kk+1] * b32[kk:kk+1, :]`, with fewer temporaries.
    step = max(1, _PRODUCT_BLOCK // out.size)
    at = a32.T
    add = np.add
    for k0 in range(0, k, step):
        k1 = min(k0 + step, k)
        for p in np.multiply(at[k0:k1, :, None], b32[k0:k1, None, :]):
            add(out, p, out=out)
    return out


def mmad_int32(acc: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return acc + a @ b with a, b int8 (or int4 values held in int8), accumulated exactly in int32.

    Exactness: |a_ik * b_kj| <= 2^14 for int8 operands, so over a K chunk of at most 1024 every partial sum,
    in any order, is an integer of magnitude <= 2^24: the float32 matmul of a chunk is exact. The chunks'
    sums and acc are added in float64 (exact integers below 2^53) and the cast is lossless. Float BLAS is
    far faster than numpy's integer matmul, and its summation order cannot matter when every partial sum
    is exactly representable. Operands of other integer types take one float64 matmul (exact while
    |a_ik * b_kj| * K < 2^53).
    """
    a_, b_ = np.asarray(a), np.asarray(b)
    m, k = a_.shape
    k2, n = b_.shape
    if k != k2:
        raise ValueError(f"mmad: inner dimensions differ ({k} vs {k2})")
    out = np.zeros((m, n), dtype=np.float64) if acc is None else np.array(acc, dtype=np.float64)
    if a_.dtype == np.int8 and b_.dtype == np.int8:
        for k0 in range(0, k, _INT8_CHUNK):
            k1 = min(k0 + _INT8_CHUNK, k)
            out += a_[:, k0:k1].astype(np.float32) @ b_[k0:k1].astype(np.float32)
    else:
        out += a_.astype(np.float64) @ b_.astype(np.float64)
    if out.size and (out.max() > _I32.max or out.min() < _I32.min):
        raise OverflowError("mmad_int32: int32 accumulator overflow")
    return out.astype(np.int32)


_INT8_CHUNK = 1024  # 128 * 128 * 1024 = 2^24: the longest K whose fp32 partial sums are all exact
_I32 = np.iinfo(np.int32)


def to_bf16(x: np.ndarray) -> np.ndarray:
    """Round to bf16 with round-to-nearest-even (the FixPipe / vector cast rounding)."""
    return np.asarray(x).astype(BF16)


def mmad_mx_fp32(acc: np.ndarray | None, a: np.ndarray, a_scales: np.ndarray, b: np.ndarray,
                 b_scales: np.ndarray) -> np.ndarray:
    """Return acc + A @ B for MX operands (a: m x k, blocks of 32 along k; b: k x n, blocks along k).

    Semantics chosen (docs/numerics.md): per 32-element block, the dot product of the elements is exact
    (E2M1 / E4M3 products and their sums over 32 terms fit easily in float64), it is multiplied exactly by
    2**(e_a + e_b), rounded once to fp32 (RNE) and added to the fp32 accumulator, blocks in ascending k.
    Like mmad_fp32, an element depends only on its row, column and the accumulator's start value, so any
    tiling of M and N (and of K on block boundaries, with the accumulator chained) gives the same bits.
    """
    # Local import: mx imports this module for to_bf16.
    from npusim.numerics.mx import MX_BLOCK, e8m0_exponent, elems_to_float

    a64 = elems_to_float(a, np.float64)
    b64 = elems_to_float(b, np.float64)
    m, k = a64.shape
    k2, n = b64.shape
    if k != k2:
        raise ValueError(f"mmad_mx: inner dimensions differ ({k} vs {k2})")
    if k % MX_BLOCK:
        raise ValueError(f"mmad_mx: k = {k} is not a multiple of the MX block {MX_BLOCK}")
    ea = e8m0_exponent(a_scales)
    eb = e8m0_exponent(b_scales)
    nb = k // MX_BLOCK
    if ea.shape != (m, nb) or eb.shape != (nb, n):
        raise ValueError(f"mmad_mx: scale shapes {ea.shape}, {eb.shape} do not match ({m}, {nb}), ({nb}, {n})")
    # Scaling by powers of two is exact in float64 (|e| <= 127, elements of <= 4 significant bits), so
    # 2**e_b * ((a * 2**e_a) @ b) over one block is exactly 2**(e_a + e_b) * (exact element dot).
    pa = np.repeat(np.ldexp(1.0, ea), MX_BLOCK, axis=1)
    a_blocks = np.ascontiguousarray((a64 * pa).reshape(m, nb, MX_BLOCK).transpose(1, 0, 2))  # (nb, m, 32)
    pb = np.ldexp(1.0, eb)  # (nb, n)
    out = np.zeros((m, n), dtype=np.float32) if acc is None else np.array(acc, dtype=np.float32)
    for blk in range(nb):
        dot = a_blocks[blk] @ b64[blk * MX_BLOCK : (blk + 1) * MX_BLOCK]
        dot *= pb[blk]
        out += dot.astype(np.float32)  # one rounding per block, then the fp32 add
    return out

def add_fp32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vector fp32 add (RNE): how partial results of separate K slices are chained, in ascending K."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise ValueError(f"add_fp32: operands must be float32, got {a.dtype} and {b.dtype}")
    return a + b
