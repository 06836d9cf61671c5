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


def mmad_fp32(acc: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return acc + a @ b with a (m x k) and b (k x n) in bf16, accumulated sequentially in fp32.

    `acc` is not modified; None means a zero accumulator (the mmad's "init" flag).

    Every element gets exactly `for kk in range(k): out += a32[:, kk:kk+1] * b32[kk:kk+1, :]`: one fp32
    multiply (exact for bf16 operands in fp32's normal range) and one fp32 add (RNE) per k, ascending k.
    """
    a32 = np.asarray(a).astype(np.float32, copy=False)
    b = np.asarray(b)
    m, k = a32.shape
    k2, n = b.shape
    if k != k2:
        raise ValueError(f"mmad: inner dimensions differ ({k} vs {k2})")
    out = np.zeros((m, n), dtype=np.float32) if acc is None else np.array(acc, dtype=np.float32)
    if out.size == 0 or k == 0:
        return out
    jit = _jit()
    if jit:
        a32 = np.ascontiguousarray(a32)
        if b.dtype == BF16:
            jit.accumulate_bf16_bits(out, a32, np.ascontiguousarray(b).view(np.uint16))
        else:
            jit.accumulate_fp32(out, a32, np.ascontiguousarray(b, dtype=np.float32))
    elif _REDUCE_MIN <= out.size <= _REDUCE_MAX and _REDUCE_SEQUENTIAL:
        _accumulate_reduce(out, a32, b.astype(np.float32, copy=False))
    else:
        _accumulate_loop(out, a32, b)
    return out


_JIT = None


def _jit():
    """The compiled kernels (cube_jit), imported on first use; False where numba cannot be imported, and
    then the numpy paths below, which compute the same bits, only slower."""
    global _JIT
    if _JIT is None:
        try:
            from npusim.numerics import cube_jit
            _JIT = cube_jit
        except Exception:  # noqa: BLE001  (no numba, or numba without a usable cache dir: RuntimeError)
            _JIT = False
    return _JIT


def _accumulate_loop(out: np.ndarray, a32: np.ndarray, b: np.ndarray) -> None:
    """out += a32[:, kk] * b[kk] for kk ascending, one fp32 multiply and one in-place fp32 add per k.

    A large accumulator is done a block of at most _LOOP_BLOCK elements at a time (all of k for one block,
    then the next: elements are independent, so the order of the blocks cannot matter), which keeps the
    block's accumulator and products in cache; b is converted to fp32 (exactly, from bf16) a block of rows
    at a time, so a whole-tensor reference never holds a K x N fp32 copy of its weights.
    """
    m, n = out.shape
    cols = n if m * n <= _LOOP_BLOCK else min(n, max(_LOOP_MIN_COLS, _LOOP_BLOCK // m))
    rows_m = max(1, _LOOP_BLOCK // cols)
    multiply, add = np.multiply, np.add
    for c0 in range(0, n, cols):
        c1 = min(c0 + cols, n)
        for m0 in range(0, m, rows_m):
            m1 = min(m0 + rows_m, m)
            blk = out[m0:m1, c0:c1]
            acc = blk if blk.flags.c_contiguous else blk.copy()
            tmp = np.empty_like(acc)
            at = a32[m0:m1].T[:, :, None]
            rows = max(1, _CONVERT_BLOCK // (c1 - c0))
            for k0 in range(0, b.shape[0], rows):
                b32 = b[k0:k0 + rows, c0:c1].astype(np.float32, copy=False)
                for col, row in zip(at[k0:k0 + rows], b32):
                    multiply(col, row, out=tmp)
                    add(acc, tmp, out=acc)
            if acc is not blk:
                blk[...] = acc


_LOOP_BLOCK = 1 << 16  # accumulator elements per block of the loop (256 KiB)
_LOOP_MIN_COLS = 256  # ... at least this many columns wide, for long inner loops
_CONVERT_BLOCK = 1 << 18  # fp32 elements of b converted at a time by the loop (1 MiB)


# Small accumulators (a Cube tile: 16 x 176 = 2816 elements) take the products of a block of k in one
# multiply and the k adds in one reduction; large ones (a whole-tensor reference) the plain loop, which is
# faster once one k step is big enough to hide the per-call cost.
_REDUCE_MIN, _REDUCE_MAX = 16, 8192
_REDUCE_BLOCK = 1 << 18  # fp32 elements of the (k block + 1) x m x n buffer (1 MiB)
_NEG_ZERO = np.float32(-0.0)


def _accumulate_reduce(out: np.ndarray, a32: np.ndarray, b32: np.ndarray) -> None:
    """The loop's arithmetic with numpy running the k loop: P = [out, products of k0..k1-1] as one
    C-contiguous (1 + kb, m, n) array, then np.add.reduce(P, axis=0, initial=-0.0, out=out).

    Why that is the same sequence of fp32 operations: the reduced axis is the outermost, slowest axis, so
    numpy's iterator makes the contiguous m x n axis the inner loop (m * n >= _REDUCE_MIN) and calls the
    elementwise fp32 add once per k, in ascending order: out = ((-0.0 + P[0]) + P[1]) + ... , and
    -0.0 + x is x for every x (the start value -0.0, unlike numpy's default 0.0, keeps an accumulator's
    -0.0). Pairwise summation only happens when the reduced axis is the inner loop, which it is not here.
    numpy does not promise this order in its documentation, so it is probed when this module is imported
    (accumulations that any regrouping or reordering of the adds would change) and the loop is used if the
    probe fails; tests/numerics/test_numerics_fast_paths.py checks both paths against the loop bit for bit.
    """
    m, n = out.shape
    k = a32.shape[1]
    step = max(1, _REDUCE_BLOCK // out.size - 1)
    buf = np.empty((min(step, k) + 1, m, n), dtype=np.float32)
    at = a32.T
    for k0 in range(0, k, step):
        k1 = min(k0 + step, k)
        p = buf[: k1 - k0 + 1]
        p[0] = out
        np.multiply(at[k0:k1, :, None], b32[k0:k1, None, :], out=p[1:])
        np.add.reduce(p, axis=0, out=out, initial=_NEG_ZERO)


def _probe_sequential_reduce() -> bool:
    """True if _accumulate_reduce performs the adds one k at a time in ascending k (see its docstring)."""
    m, n, k = 4, 8, 40
    a = np.full((m, k), 2.0**-12, np.float32)
    b = np.full((k, n), 2.0**-12, np.float32)
    a[:, 0], a[:, -1] = 1.0, -1.0
    b[0], b[-1] = 1.0, 1.0
    # products 1, 2^-24 (38 times), -1 from 0: ascending k gives 1 (each 1 + 2^-24 is a tie that rounds
    # back to 1), then 0. Any other grouping or order keeps some of the 38 * 2^-24.
    out = np.zeros((m, n), np.float32)
    _accumulate_reduce(out, a, b)
    first = bool(np.all(out == 0.0))
    # from acc = 1 with 40 products of 2^-24 (a and b all 2^-12): ascending adds keep exactly 1.
    out = np.ones((m, n), np.float32)
    _accumulate_reduce(out, np.full((m, k), 2.0**-12, np.float32), np.full((k, n), 2.0**-12, np.float32))
    second = bool(np.all(out == 1.0))
    # -0.0 plus products of -0.0 stays -0.0.
    out = np.full((m, n), -0.0, np.float32)
    _accumulate_reduce(out, np.full((m, k), -0.0, np.float32), np.ones((k, n), np.float32))
    return first and second and bool(np.all(np.signbit(out)))


_REDUCE_SEQUENTIAL = _probe_sequential_reduce()


def mmad_int32(acc: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return acc + a @ b with a, b int8 (or int4 values held in int8), accumulated exactly in int32.

    Exactness: |a_ik * b_kj| <= 2^14 for int8 operands, so over a K chunk of at most 1024 every partial sum,
    in any order, is an integer of magnitude <= 2^24: the float32 matmul of a chunk is exact. The chunks'
    sums and acc are added in float64 (exact integers below 2^53) and the cast is lossless. Float BLAS is
    far faster than numpy's integer matmul, and its summation order cannot matter when every partial sum
    is exactly representable. Large operands go through blocks of b (columns are independent), so no
    K x N float copy of b is made. Operands of other integer types take one float64 matmul (exact while
    |a_ik * b_kj| * K < 2^53).
    """
    a_, b_ = np.asarray(a), np.asarray(b)
    m, k = a_.shape
    k2, n = b_.shape
    if k != k2:
        raise ValueError(f"mmad: inner dimensions differ ({k} vs {k2})")
    if a_.dtype == np.int8 and b_.dtype == np.int8:
        a32 = a_.astype(np.float32)
        if k <= _INT8_CHUNK and b_.size <= _INT8_BLOCK:  # a Cube tile: one exact fp32 matmul
            prod = a32 @ b_.astype(np.float32)
            if acc is None:
                return prod.astype(np.int32)  # |prod| <= 2^24: no overflow
            out = prod.astype(np.float64)
            out += np.asarray(acc)
        else:
            out = np.zeros((m, n), dtype=np.float64) if acc is None else np.array(acc, dtype=np.float64)
            cols = max(1, _INT8_BLOCK // max(1, min(k, _INT8_CHUNK)))
            for c0 in range(0, n, cols):
                c1 = min(c0 + cols, n)
                for k0 in range(0, k, _INT8_CHUNK):
                    k1 = min(k0 + _INT8_CHUNK, k)
                    out[:, c0:c1] += a32[:, k0:k1] @ b_[k0:k1, c0:c1].astype(np.float32)
    else:
        out = a_.astype(np.float64) @ b_.astype(np.float64)
        if acc is not None:
            out += np.asarray(acc)
    if out.size and (out.max() > _I32.max or out.min() < _I32.min):
        raise OverflowError("mmad_int32: int32 accumulator overflow")
    return out.astype(np.int32)


_INT8_CHUNK = 1024  # 128 * 128 * 1024 = 2^24: the longest K whose fp32 partial sums are all exact
_INT8_BLOCK = 1 << 20  # elements of b converted to fp32 at a time (4 MiB)
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
