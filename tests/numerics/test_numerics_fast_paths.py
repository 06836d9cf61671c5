"""The fast implementations of the primitives give the bits of their plain definitions (issue 8).

Each test holds a literal, slow statement of the documented semantics (docs/numerics.md) and checks the
library's implementation against it bit for bit, on random and adversarial inputs: sequential per-k fp32
accumulation for mmad_fp32, exact integer arithmetic for mmad_int32, ties-away rounding with its signed
zeros, and the integer quantizer / dequant tile / FP64 truth as one-line formulas.
"""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npusim.numerics import cube
from npusim.numerics.cube import mmad_fp32, mmad_int32, to_bf16
from npusim.numerics.intq import (
    dequant_int_tile, expand_scale, int_values_fp64, quantize_weights_int,
)
from npusim.numerics.rounding import half_away_into, round_half_away
from npusim.sim.references import gemm_fp64_int

BF16 = np.dtype(ml_dtypes.bfloat16)


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def same_bits(a, b):
    """Identical bit patterns, except that any NaN matches any NaN (payloads are not a semantic)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.kind == "f":
        na, nb = np.isnan(a), np.isnan(b)
        return bool(np.array_equal(na, nb) and np.array_equal(bits(a)[~na], bits(b)[~nb]))
    return bool(np.array_equal(a, b))


# ---- mmad_fp32: one fp32 multiply and one fp32 add (RNE) per k, ascending k ---------------------------

def mmad_fp32_literal(acc, a, b):
    a32, b32 = np.asarray(a).astype(np.float32), np.asarray(b).astype(np.float32)
    out = np.zeros((a32.shape[0], b32.shape[1]), np.float32) if acc is None else np.array(acc, np.float32)
    for kk in range(a32.shape[1]):
        out += a32[:, kk:kk + 1] * b32[kk:kk + 1, :]
    return out


def bf16_from_bits(u16):
    return np.asarray(u16, dtype=np.uint16).view(BF16)


def finite_bf16(rng, shape, spread=True):
    """bf16 values over the whole finite range (normals, subnormals, zeros of both signs) or near 1."""
    if spread:
        u = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
        u[(u & 0x7F80) == 0x7F80] &= 0xBFFF  # no Inf / NaN: clear the exponent's top bit
        return bf16_from_bits(u)
    return to_bf16(rng.standard_normal(shape, dtype=np.float32))


@settings(max_examples=120, deadline=None)
@given(m=st.integers(0, 9), k=st.integers(0, 70), n=st.integers(0, 9), seed=st.integers(0, 2**32 - 1),
       spread=st.booleans(), with_acc=st.booleans())
def test_mmad_fp32_is_the_sequential_fp32_loop(m, k, n, seed, spread, with_acc):
    rng = np.random.default_rng(seed)
    a, b = finite_bf16(rng, (m, k), spread), finite_bf16(rng, (k, n), spread)
    acc = rng.standard_normal((m, n), dtype=np.float32) if with_acc else None
    with np.errstate(all="ignore"):  # spread values overflow to Inf and make Inf - Inf
        assert same_bits(mmad_fp32(acc, a, b), mmad_fp32_literal(acc, a, b))


@pytest.mark.parametrize("m,k,n", [(16, 64, 176), (16, 32, 160), (3, 300, 5000), (1, 2000, 1), (40, 5, 2000)])
def test_mmad_fp32_blocks_of_k_keep_the_order(m, k, n):
    # Shapes on both sides of the product block (_PRODUCT_BLOCK elements of m x n per k block).
    rng = np.random.default_rng(m * k * n)
    a, b = finite_bf16(rng, (m, k), False), finite_bf16(rng, (k, n), False)
    acc = rng.standard_normal((m, n), dtype=np.float32)
    assert same_bits(mmad_fp32(acc, a, b), mmad_fp32_literal(acc, a, b))
    assert same_bits(mmad_fp32(None, a, b), mmad_fp32_literal(None, a, b))


def test_mmad_fp32_rounds_every_step():
    # acc = 1 and k products of 2^-24: each add is a tie that rounds back to 1 (RNE). Any grouping of
    # products before they meet the accumulator (pairwise, blocked, BLAS) would give 1 + k * 2^-24.
    k = 64
    a = to_bf16(np.full((2, k), 2.0**-12, np.float32))
    b = to_bf16(np.full((k, 3), 2.0**-12, np.float32))
    out = mmad_fp32(np.ones((2, 3), np.float32), a, b)
    assert np.all(out == 1.0)
    # ... and the order is ascending k: a large term first absorbs the small ones, last it does not.
    a = to_bf16(np.array([[1.0, 2.0**-12, 2.0**-12, -1.0]], np.float32))
    b = to_bf16(np.array([[1.0], [2.0**-12], [2.0**-12], [1.0]], np.float32))
    assert mmad_fp32(None, a, b)[0, 0] == 0.0  # 1 + 2^-24 is a tie that rounds to 1, twice; then - 1
    order = [1, 2, 0, 3]  # the small products first: 2^-23, then 1 + 2^-23 is exact, then - 1
    assert mmad_fp32(None, a[:, order], b[order])[0, 0] == 2.0**-23


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 90), n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_both_accumulation_paths_are_the_loop(m, k, n, seed):
    # The numpy paths (used where numba cannot be imported): the reduction path (small accumulators) and
    # the loop path (large ones) on the same data, outside their size ranges, must both be the loop.
    rng = np.random.default_rng(seed)
    a32 = finite_bf16(rng, (m, k), seed % 2 == 0).astype(np.float32)
    b32 = finite_bf16(rng, (k, n), seed % 3 == 0).astype(np.float32)
    acc = rng.standard_normal((m, n), dtype=np.float32)
    with np.errstate(all="ignore"):
        want = mmad_fp32_literal(acc, a32, b32)
        for path in (cube._accumulate_loop, cube._accumulate_reduce):
            if path is cube._accumulate_reduce and m * n < cube._REDUCE_MIN:
                continue
            out = acc.copy()
            path(out, a32, b32)
            assert same_bits(out, want), path.__name__


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 40), n=st.integers(1, 1100), seed=st.integers(0, 2**32 - 1),
       spread=st.booleans())
def test_compiled_kernels_are_the_loop(m, k, n, seed, spread):
    # Both compiled kernels (b as fp32, b as bf16 bits), on shapes across their row and column blocks,
    # with values over the whole bf16 range (subnormal products, overflow to Inf, Inf - Inf = NaN, -0.0).
    from npusim.numerics import cube_jit
    rng = np.random.default_rng(seed)
    a, b = finite_bf16(rng, (m, k), spread), finite_bf16(rng, (k, n), spread)
    acc = rng.standard_normal((m, n), dtype=np.float32)
    acc[rng.random((m, n)) < 0.1] = -0.0
    a32 = a.astype(np.float32)
    with np.errstate(all="ignore"):
        want = mmad_fp32_literal(acc, a, b)
        for kernel, operand in ((cube_jit.accumulate_fp32, b.astype(np.float32)),
                                (cube_jit.accumulate_bf16_bits, b.view(np.uint16))):
            out = acc.copy()
            kernel(out, a32, operand)
            assert same_bits(out, want), kernel.__name__


def test_mmad_fp32_takes_the_compiled_kernels(monkeypatch):
    # numba is a dependency: mmad_fp32 must not silently run on the numpy fallback
    jit = cube._jit()
    assert jit is not False
    calls = []
    for name in ("accumulate_fp32", "accumulate_bf16_bits"):
        real = getattr(jit, name)
        monkeypatch.setattr(jit, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    a = to_bf16(np.ones((4, 8), np.float32))
    mmad_fp32(None, a, a.T.copy())
    mmad_fp32(None, a, a.T.astype(np.float32))
    assert calls == ["accumulate_bf16_bits", "accumulate_fp32"]


@pytest.mark.parametrize("m,k,n", [(600, 9, 300), (5, 40, 1000), (70, 3, 70), (1, 30, 5000)])
def test_loop_path_in_blocks_of_the_accumulator(monkeypatch, m, k, n):
    monkeypatch.setattr(cube, "_LOOP_BLOCK", 1000)
    monkeypatch.setattr(cube, "_LOOP_MIN_COLS", 16)
    monkeypatch.setattr(cube, "_CONVERT_BLOCK", 700)
    rng = np.random.default_rng(m + k + n)
    a, b = finite_bf16(rng, (m, k), False), finite_bf16(rng, (k, n), False)
    acc = rng.standard_normal((m, n), dtype=np.float32)
    out = acc.copy()
    cube._accumulate_loop(out, a.astype(np.float32), b)
    assert same_bits(out, mmad_fp32_literal(acc, a, b))


def test_reduction_path_is_in_use_and_keeps_negative_zero():
    assert cube._REDUCE_SEQUENTIAL  # numpy reduces the outer axis one k at a time (import-time probe)
    # An accumulator of -0.0 plus products of -0.0 stays -0.0 in the loop; a reduction starting from
    # numpy's default 0.0 would give +0.0 (the reduction path starts from -0.0).
    m, k, n = 4, 8, 16
    acc = np.full((m, n), -0.0, np.float32)
    acc[0, 0] = 1.0
    a = to_bf16(np.full((m, k), -0.0, np.float32))
    b = to_bf16(np.ones((k, n), np.float32))
    out = mmad_fp32(acc, a, b)
    assert same_bits(out, mmad_fp32_literal(acc, a, b))
    assert np.signbit(out[1:]).all() and out[0, 0] == 1.0


def test_mmad_fp32_does_not_touch_its_inputs():
    rng = np.random.default_rng(5)
    a, b = finite_bf16(rng, (4, 8), False), finite_bf16(rng, (8, 6), False)
    acc = rng.standard_normal((4, 6), dtype=np.float32)
    copies = [x.copy() for x in (acc, a, b)]
    mmad_fp32(acc, a, b)
    assert all(same_bits(x, c) for x, c in zip((acc, a, b), copies))


# ---- mmad_int32: exact integer result, overflow refused ------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 6), k=st.integers(0, 2600), n=st.integers(0, 6), seed=st.integers(0, 2**32 - 1),
       extreme=st.booleans())
def test_mmad_int32_is_exact(m, k, n, seed, extreme):
    rng = np.random.default_rng(seed)
    if extreme:  # every product +-2^14: the largest partial sums, across the 1024-deep fp32 chunks
        a = rng.choice(np.array([-128, 127, -127], np.int8), size=(m, k))
        b = np.full((k, n), -128, np.int8)
    else:
        a = rng.integers(-128, 128, (m, k), dtype=np.int8)
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    acc = rng.integers(-2**20, 2**20, (m, n), dtype=np.int32)
    want = a.astype(np.int64) @ b.astype(np.int64) + acc
    got = mmad_int32(acc, a, b)
    assert got.dtype == np.int32 and np.array_equal(got, want)
    assert np.array_equal(mmad_int32(None, a, b), a.astype(np.int64) @ b.astype(np.int64))


@pytest.mark.parametrize("block", [1 << 20, 50, 1])
def test_mmad_int32_in_blocks_of_b(monkeypatch, block):
    monkeypatch.setattr(cube, "_INT8_BLOCK", block)
    rng = np.random.default_rng(block)
    a = rng.integers(-128, 128, (6, 1500), dtype=np.int8)
    b = rng.integers(-128, 128, (1500, 37), dtype=np.int8)
    acc = rng.integers(-2**30, 2**30, (6, 37), dtype=np.int32)
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert np.array_equal(mmad_int32(None, a, b), want)
    assert np.array_equal(mmad_int32(acc, a, b), want + acc)
    short = a[:, :100].astype(np.int64) @ b[:100].astype(np.int64)  # one K chunk: the tile path
    assert np.array_equal(mmad_int32(acc, a[:, :100], b[:100]), short + acc)


def test_mmad_int32_all_minus_128_at_the_chunk_depth():
    k = cube._INT8_CHUNK
    a = np.full((1, k), -128, np.int8)
    b = np.full((k, 1), -128, np.int8)
    assert mmad_int32(None, a, b)[0, 0] == 2**24  # every fp32 partial sum exact up to 2^24
    two = mmad_int32(None, np.full((1, 2 * k + 1), -128, np.int8), np.full((2 * k + 1, 1), -128, np.int8))
    assert two[0, 0] == (2 * k + 1) * 2**14


def test_mmad_int32_overflow_and_other_int_types():
    with pytest.raises(OverflowError):
        mmad_int32(np.full((1, 1), 2**31 - 2**14, np.int32), np.full((1, 2), 127, np.int8),
                   np.full((2, 1), 127, np.int8))
    a = np.array([[3, -4]], np.int32)
    b = np.array([[100000], [7]], np.int32)
    assert mmad_int32(None, a, b)[0, 0] == 299972


# ---- round_half_away -----------------------------------------------------------------------------------

def half_away_literal(x):
    x = np.asarray(x, dtype=np.float64)
    r = np.rint(x)
    tie = np.abs(x - r) == 0.5
    return np.where(tie, x + np.copysign(0.5, x), r)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40))
def test_round_half_away_on_random_float64_bit_patterns(patterns):
    x = np.array(patterns, dtype=np.uint64).view(np.float64)
    with np.errstate(invalid="ignore"):
        assert same_bits(round_half_away(x), half_away_literal(x))


def test_round_half_away_signed_zeros_ties_and_non_finite():
    x = np.array([0.0, -0.0, -0.3, 0.3, -0.5, 0.5, -1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994,
                  2.0**52 - 0.5, -(2.0**52) + 0.5, 2.0**52 + 1, 1e308, -1e308, 5e-324, -5e-324,
                  np.inf, -np.inf, np.nan])
    with np.errstate(invalid="ignore"):
        got = round_half_away(x)
        assert same_bits(got, half_away_literal(x))
    assert np.signbit(got[[1, 2]]).all() and not np.signbit(got[[0, 3]]).any()
    # many chunks
    y = np.random.default_rng(3).standard_normal(200_000) * 300
    assert same_bits(round_half_away(y), half_away_literal(y))
    # the buffer form without signed zeros differs from the public one only in the sign of zero
    out, tmp = np.empty_like(y), np.empty_like(y)
    z = half_away_into(y, out, tmp, signed_zero=False)
    assert np.array_equal(z, half_away_literal(y))


# ---- integer weights: quantizer, dequant tile, FP64 truth --------------------------------------------

def quantize_literal(w, bits_, group_k):
    """The documented quantizer, whole-tensor: s = fp32(amax) / qmax in fp32, q = round_half_away(w / s)."""
    top = 2 ** (bits_ - 1) - 1
    w32 = w.astype(np.float32)
    k, n = w32.shape
    if group_k is None:
        amax = np.abs(w32).max(axis=0) if k else np.zeros(n, np.float32)
    else:
        amax = np.abs(w32).reshape(k // group_k, group_k, n).max(axis=1)
    scale = amax.astype(np.float32) / np.float32(top)
    safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float64)
    s_full = safe[None, :] if group_k is None else np.repeat(safe, group_k, axis=0)
    q = np.clip(half_away_literal(w32.astype(np.float64) / s_full), -top, top).astype(np.int8)
    return q, scale


@pytest.mark.parametrize("dtype", [np.float32, BF16, np.float16])
@pytest.mark.parametrize("bits_,group_k", [(8, None), (8, 128), (4, 128), (4, 32)])
def test_quantizer_matches_its_definition(dtype, bits_, group_k):
    rng = np.random.default_rng(17)
    k, n = 512, 300  # several slabs of rows
    w = (rng.standard_normal((k, n), dtype=np.float32) * np.float32(0.02)).astype(dtype)
    w[:, 5] = 0.0
    w[:, 6] = np.array(-0.0, dtype)  # an all-(-0.0) channel: scale +0.0, like |w|'s max
    w[:128, 7] = 0.0
    w[3, 8] = np.float32(0.02) * 3.5  # ties of w / s land on half-integers for some columns
    iw = quantize_weights_int(w, bits=bits_, group_k=group_k)
    q, scale = quantize_literal(w, bits_, group_k)
    assert np.array_equal(iw.q, q)
    assert same_bits(iw.scale, scale)


@settings(max_examples=300, deadline=None)
@given(w_bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30), s_bits=st.integers(1, 0x7F7FFFFF))
def test_quantizer_rounding_of_fp32_quotients(w_bits, s_bits):
    # fl64(w / s) for fp32 w and a positive fp32 s, |w| <= 127 s as the quantizer has them, near-ties too.
    from npusim.numerics.intq import _quotient_codes

    s = np.array([s_bits], np.uint32).view(np.float32)[0]
    w = np.array(w_bits, np.uint32).view(np.float32)
    w = w[np.isfinite(w)]
    with np.errstate(all="ignore"):
        w = np.clip(w, -np.float32(127.0) * s, np.float32(127.0) * s).astype(np.float32)
        j = np.arange(-128, 128, dtype=np.float64)
        ties = ((j + 0.5) * np.float64(s)).astype(np.float32)  # nearest fp32 to each half-integer multiple
        near = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, -np.float32(np.inf))])
        w = np.concatenate([w, near[np.isfinite(near)]])
        x = w.astype(np.float64) / np.float64(s)
        want = np.clip(half_away_literal(x), -127, 127)
        got = _quotient_codes(x.copy(), np.empty_like(x), 127)
    assert np.array_equal(got, want)


def test_quantizer_exact_ties_and_empty():
    # w / s exactly k + 1/2: s = 127 / 127 = 1 for a column whose max is 127.
    w = np.array([[127.0, 127.0], [2.5, -2.5], [-0.5, 0.5], [126.5, -126.5]], np.float32)
    iw = quantize_weights_int(w)
    assert iw.q[:, 0].tolist() == [127, 3, -1, 127] and iw.q[:, 1].tolist() == [127, -3, 1, -127]
    e = quantize_weights_int(np.zeros((0, 3), np.float32))
    assert e.q.shape == (0, 3) and same_bits(e.scale, np.zeros(3, np.float32))


@pytest.mark.parametrize("group_k", [None, 32])
def test_dequant_tile_and_fp64_values_match_their_definitions(group_k):
    rng = np.random.default_rng(23)
    w = rng.standard_normal((128, 48), dtype=np.float32)
    iw = quantize_weights_int(w, bits=8, group_k=group_k)
    s_full = expand_scale(iw.scale, 128, group_k)
    assert same_bits(dequant_int_tile(iw.q, iw.scale, group_k), to_bf16(iw.q.astype(np.float32) * s_full))
    want64 = iw.q.astype(np.float64) * s_full.astype(np.float64)
    assert same_bits(int_values_fp64(iw.q, iw.scale, group_k), want64)
    assert same_bits(iw.values_fp64(), want64)
    x = to_bf16(rng.standard_normal((4, 128), dtype=np.float32))
    assert same_bits(gemm_fp64_int(x, iw.q, iw.scale, group_k), x.astype(np.float64) @ want64)


# ---- references computed a block of weights at a time ---------------------------------------------

@pytest.mark.parametrize("k_tile", [None, 256])
@pytest.mark.parametrize("group_k", [None, 128])
def test_dequant_references_in_blocks_are_the_whole_tensor_ones(monkeypatch, k_tile, group_k):
    from npusim.numerics import reference as ref
    from npusim.numerics.mx import dequant_mx_tile, quantize_mx

    rng = np.random.default_rng(31)
    m, k, n = 5, 640, 96
    x = to_bf16(rng.standard_normal((m, k), dtype=np.float32))
    w = rng.standard_normal((k, n), dtype=np.float32)
    iw = quantize_weights_int(w, bits=8, group_k=group_k)
    mx = quantize_mx(w, "mxfp4", axis=0)

    def whole_int(out):  # the definition: dequantize all of W, then one mmad per K slice
        wb = dequant_int_tile(iw.q, iw.scale, group_k)
        parts = [mmad_fp32_literal(None, x[:, a:b], wb[a:b]) for a, b in ref.k_slices(k, k_tile)]
        return parts

    def whole_mx():
        wb = dequant_mx_tile(mx.elems, mx.scales, axis=0)
        return [mmad_fp32_literal(None, x[:, a:b], wb[a:b]) for a, b in ref.k_slices(k, k_tile)]

    def chain(parts, out):
        acc = parts[0]
        for p in parts[1:]:
            acc = acc + p
        return to_bf16(acc) if out == "bf16" else acc

    for block, acc in ((1 << 20, 1 << 16), (128 * n, 1 << 16), (64 * n + 5, 1 << 16), (1000, 30)):
        # one block, several, a size that is no multiple; blocks of columns
        monkeypatch.setattr(ref, "_BLOCK_ELEMS", block)
        monkeypatch.setattr(ref, "_ACC_ELEMS", acc)
        for out in ("bf16", "fp32"):
            got = ref.gemm_dequant_int(x, iw.q, iw.scale, group_k=group_k, k_tile=k_tile, out=out)
            assert same_bits(got, chain(whole_int(out), out))
            got = ref.gemm_dequant_mx(x, mx.elems, mx.scales, k_tile=k_tile, out=out)
            assert same_bits(got, chain(whole_mx(), out))


# ---- FP64 truths in column blocks, random inputs in slabs ------------------------------------------------

def test_fp64_truths_in_column_blocks(monkeypatch):
    from npusim.numerics import reference as ref

    rng = np.random.default_rng(41)
    x = to_bf16(rng.standard_normal((7, 300), dtype=np.float32))
    w = to_bf16(rng.standard_normal((300, 130), dtype=np.float32))
    iw = quantize_weights_int(rng.standard_normal((300, 130), dtype=np.float32))
    want = x.astype(np.float64) @ w.astype(np.float64)
    want_int = x.astype(np.float64) @ (iw.q.astype(np.float64) * iw.scale.astype(np.float64))
    for block in (1 << 18, 300 * 16, 300 * 7 + 1, 1):
        monkeypatch.setattr(ref, "_TRUTH_BLOCK", block)
        # Column blocks of the same BLAS matmul: the same dot products (a BLAS may differ in the last ulp).
        np.testing.assert_allclose(ref.gemm_fp64(x, w), want, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(gemm_fp64_int(x, iw.q, iw.scale), want_int, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(300, 77), (5, 3), (1, 1000), (2, 3, 4), (9,), (0, 4)])
@pytest.mark.parametrize("spec", [{"kind": "normal"}, {"kind": "normal", "std": 0.3, "outlier_channels": {"2": 50.0}}])
def test_random_normal_is_one_draw_whatever_the_threads_and_the_cast(monkeypatch, shape, spec):
    """Normal tensors are drawn in blocks of leading rows, one stream per block, by several threads: the
    values depend on (seed, key, shape) only, and a cast tensor is the float32 draw cast."""
    import npusim.hw.datapath as datapath

    monkeypatch.setattr(datapath, "_NORMAL_BLOCK", 7)  # many blocks, of odd sizes
    inputs = datapath.Inputs(seed=11)
    import npusim.numerics.parallel as parallel
    monkeypatch.setattr(parallel, "THREADS", 1)
    whole = inputs.random("w", shape, spec)
    assert whole.dtype == np.float32 and whole.shape == shape
    if whole.size > 1:
        assert len(np.unique(whole)) > 0.99 * whole.size  # the blocks draw different streams
    if spec.get("outlier_channels") and whole.ndim == 2 and whole.shape[1] > 2 and whole.size:
        assert np.abs(whole[:, 2]).max() > 10 * np.abs(np.delete(whole, 2, axis=1)).max() / 3
    monkeypatch.setattr(parallel, "THREADS", 3)
    assert same_bits(inputs.random("w", shape, spec), whole)
    for dt in (BF16, np.dtype(np.float16), np.dtype(np.float32)):
        assert same_bits(inputs.random("w", shape, spec, dt), whole.astype(dt))
    assert not same_bits(datapath.Inputs(seed=12).random("w", shape, spec), whole) or whole.size == 0


def test_random_normal_scalar_shape():
    from npusim.hw.datapath import Inputs

    x = Inputs(seed=1).random("s", (), {"kind": "normal"}, BF16)
    assert x.shape == () and x.dtype == BF16


@pytest.mark.parametrize("group_k", [None, 4])
def test_quantize_weights_split_over_threads_is_the_same(monkeypatch, group_k):
    """quantize_weights_int shares its passes over row parts on threads: every split gives the same bits,
    and a NaN or Inf is still refused by name and index."""
    import npusim.numerics.parallel as parallel
    from npusim.errors import NumericsError

    w = np.random.default_rng(5).standard_normal((64, 37), dtype=np.float32)
    w[::7, 3] = 0.0
    w[8:12, 5] = 0.0    # an all-zero group of 4
    monkeypatch.setattr(parallel, "THREADS", 1)
    one = quantize_weights_int(w, bits=8, group_k=group_k)
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(parallel, "MIN_ELEMS_PER_THREAD", 16)
    assert len(parallel.row_parts(64, 37, group_k or 1)) == 3
    many = quantize_weights_int(w, bits=8, group_k=group_k)
    assert same_bits(one.q, many.q) and same_bits(one.scale, many.scale)
    bad = w.copy()
    bad[50, 2] = np.inf
    with pytest.raises(NumericsError, match=r"tensor 'w' has Inf at index \(50, 2\)"):
        quantize_weights_int(bad, bits=8, group_k=group_k)


def test_quantize_weights_empty_k_keeps_the_group_scale_shape():
    w = np.zeros((0, 6), np.float32)
    assert quantize_weights_int(w, bits=8, group_k=4).scale.shape == (0, 6)
    assert quantize_weights_int(w, bits=8).scale.shape == (6,)
