"""INT8 MSD: exact codes, the M/(2*127*254^(p-1)) bound (never exceeded, attained), recombination, safety."""

from fractions import Fraction
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npusim.errors import NumericsError
from npusim.numerics.metrics import bits_range_over_max_err, max_bound_ratio
from npusim.numerics.msd import (
    int32_safe_k, msd_apply_scales, msd_bound_factor, msd_combine_passes, msd_decompose, msd_decompose_fixed,
    msd_reconstruct_fp64, msd_recombine, msd_row_scale, msd_stack, msd_unstack, row_absmax,
)
from npusim.numerics.reference import gemm_fp64, gemm_msd_int8

F32_MAX = float(np.finfo(np.float32).max)
TINY = 2.0**-126  # below this, float32 is subnormal

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
subnormal32 = st.floats(min_value=-TINY, max_value=TINY, width=32)
huge32 = st.floats(min_value=float(np.float32(1e36)), max_value=F32_MAX, width=32).flatmap(lambda v: st.sampled_from([v, -v]))


@st.composite
def rows(draw):
    """One activation row: general, all zeros, one nonzero, all equal, subnormal, huge, or mixed."""
    n = draw(st.integers(1, 24))
    kind = draw(st.sampled_from(["general", "zeros", "single", "equal", "subnormal", "huge", "mixed"]))
    if kind == "general":
        vals = draw(st.lists(finite32, min_size=n, max_size=n))
    elif kind == "zeros":
        vals = [0.0] * n
    elif kind == "single":
        vals = [0.0] * n
        vals[draw(st.integers(0, n - 1))] = draw(finite32)
    elif kind == "equal":
        vals = [draw(finite32)] * n
    elif kind == "subnormal":
        vals = draw(st.lists(subnormal32, min_size=n, max_size=n))
    elif kind == "huge":
        vals = draw(st.lists(huge32, min_size=n, max_size=n))
    else:
        vals = draw(st.lists(st.one_of(huge32, subnormal32, finite32), min_size=n, max_size=n))
    return np.array(vals, dtype=np.float32)


def _half_away(q: Fraction) -> int:
    n = math.floor(abs(q) + Fraction(1, 2))
    return n if q >= 0 else -n


def exact_codes(row: np.ndarray, passes: int, m: Fraction | None = None) -> list[list[int]]:
    """DESIGN.md 4.2 in exact rational arithmetic."""
    vals = [Fraction(float(v)) for v in row]
    m = max(abs(v) for v in vals) if m is None else m
    out = []
    for v in vals:
        codes = []
        r = 127 * v
        for _ in range(passes):
            a = _half_away(r / m) if m else 0
            codes.append(a)
            r = 254 * (r - a * m)
        out.append(codes)
    return out


def _check_row(row: np.ndarray, passes: int, dtype) -> None:
    x = row.astype(dtype)[None, :]
    if not np.isfinite(x.astype(np.float32)).all():
        return  # a float32 value beyond bf16's range became Inf in the cast: not an input of this test
    m = row_absmax(x)
    codes = msd_decompose(x, m, passes)
    want = exact_codes(x[0].astype(np.float32), passes)
    got = codes[:, 0, :].T.tolist()
    assert got == want
    # The bound, in exact arithmetic: |x - (M/127) sum A_i / 254^(i-1)| <= M / (2 * 127 * 254^(p-1)).
    mf = Fraction(float(m[0]))
    bound = mf / (2 * 127 * 254 ** (passes - 1))
    for v, cs in zip(x[0].astype(np.float32), got):
        approx = mf / 127 * sum(Fraction(c, 254**i) for i, c in enumerate(cs))
        assert abs(Fraction(float(v)) - approx) <= bound


@settings(max_examples=250, deadline=None)
@given(rows(), st.integers(1, 4))
def test_codes_are_exact_and_bound_never_exceeded_fp32(row, passes):
    _check_row(row, passes, np.float32)


@settings(max_examples=150, deadline=None)
@given(rows(), st.integers(1, 4))
def test_codes_are_exact_and_bound_never_exceeded_bf16(row, passes):
    _check_row(row, passes, ml_dtypes.bfloat16)


def test_known_rows():
    x = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.0, -3.5, 0.0], [1.0, 0.5, 1.0 / 254]], np.float32)
    c = msd_decompose(x, row_absmax(x), 2)
    assert c[:, 0].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert c[:, 1].tolist() == [[127, 127, 127], [0, 0, 0]]
    assert c[:, 2].tolist() == [[0, -127, 0], [0, 0, 0]]
    # 0.5 * 127 = 63.5: a tie, rounded away from zero to 64, leaving -0.5 * 254 = -127 for pass 2.
    assert c[:, 3, 1].tolist() == [64, -127]


@pytest.mark.parametrize("passes,bits", [(1, 7.99), (2, 15.98), (3, 23.97)])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_bound_is_attained_on_gaussian_rows(passes, bits, dtype):
    x = np.random.default_rng(7).standard_normal((16, 1024), dtype=np.float32).astype(dtype)
    m = row_absmax(x)
    x_hat = msd_reconstruct_fp64(msd_decompose(x, m, passes), m)
    bound = m.astype(np.float64)[:, None] * msd_bound_factor(passes)
    # bf16 rows hit exact ties, where the error equals the bound; the float64 measurement of it carries
    # ~1e-10 of its own rounding (the exact check is the property test above).
    assert 0.99 < max_bound_ratio(x, x_hat, bound) <= 1.0 + 1e-9
    eff = bits_range_over_max_err(x, x_hat, m.astype(np.float64)[:, None])
    assert abs(eff - bits) < 0.02


def test_two_pass_effective_bits_is_15_98():
    x = np.random.default_rng(0).standard_normal((64, 4096), dtype=np.float32)
    m = row_absmax(x)
    x_hat = msd_reconstruct_fp64(msd_decompose(x, m, 2), m)
    assert abs(bits_range_over_max_err(x, x_hat, m.astype(np.float64)[:, None]) - 15.98) <= 0.02


def test_k_tiles_decompose_like_the_whole_row():
    x = np.random.default_rng(3).standard_normal((4, 256), dtype=np.float32)
    m = row_absmax(x)
    whole = msd_decompose(x, m, 3)
    tiles = np.concatenate([msd_decompose(x[:, k:k + 64], m, 3) for k in range(0, 256, 64)], axis=2)
    assert np.array_equal(whole, tiles)
    with pytest.raises(NumericsError, match="row_max"):
        msd_decompose(x[:, :64], m * np.float32(0.5), 2)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0, width=32), min_size=1, max_size=24), st.integers(1, 4))
def test_fixed_scale_probabilities(vals, passes):
    p = np.array([vals], dtype=np.float32)
    codes = msd_decompose_fixed(p, passes)
    assert codes[:, 0, :].T.tolist() == exact_codes(p[0], passes, m=Fraction(1))
    assert np.abs(codes).max(initial=0) <= 127
    err = np.abs(msd_reconstruct_fp64(codes, np.ones(1, np.float32)) - p.astype(np.float64))
    assert err.max() <= msd_bound_factor(passes) * (1 + 1e-12)


def test_fixed_scale_refuses_out_of_range():
    with pytest.raises(NumericsError, match=r"'p'.*\(0, 1\).*\[0, 1\]"):
        msd_decompose_fixed(np.array([[0.5, np.nextafter(np.float32(1), np.float32(2))]], np.float32), 2)
    with pytest.raises(NumericsError, match="NaN"):
        msd_decompose_fixed(np.array([[0.5, np.nan]], np.float32), 2)


def test_refusals():
    with pytest.raises(NumericsError, match="float64"):
        msd_decompose(np.zeros((2, 4)), np.zeros(2, np.float32), 2)
    x = np.ones((3, 8), np.float32)
    x[2, 5] = np.inf
    with pytest.raises(NumericsError, match=r"'x'.*Inf.*\(2, 5\)"):
        msd_decompose(x, np.ones(3, np.float32), 2)
    with pytest.raises(NumericsError, match="passes"):
        msd_decompose(np.ones((1, 4), np.float32), np.ones(1, np.float32), 5)
    with pytest.raises(NumericsError, match="passes"):
        msd_decompose(np.ones((1, 4), np.float32), np.ones(1, np.float32), 0)


def test_recombination_arithmetic():
    rng = np.random.default_rng(5)
    c = rng.integers(-2**26, 2**26, size=(3, 4, 6)).astype(np.int32)
    acc = msd_combine_passes(c)
    want = c[0].astype(np.float32)
    want = want + c[1].astype(np.float32) * np.float32(1 / 254)
    want = want + c[2].astype(np.float32) * np.float32(1 / 254**2)
    assert acc.dtype == np.float32 and np.array_equal(acc, want)
    rs = msd_row_scale(np.array([1, 2, 3, 127], np.float32))
    assert rs.dtype == np.float32 and rs.tolist() == (np.array([1, 2, 3, 127], np.float32) / np.float32(127)).tolist()
    ws = rng.random(6).astype(np.float32)
    y = msd_recombine(c, rs, ws)
    assert np.array_equal(y, (acc * rs[:, None]) * ws[None, :])
    assert np.array_equal(msd_apply_scales(acc, rs, ws), y)
    assert np.array_equal(msd_unstack(msd_stack(c), 3), c)


def test_int32_safe_limit_from_component_ranges():
    k = int32_safe_k()
    assert k == 133144
    assert 127 * 127 * k <= 2**31 - 1 < 127 * 127 * (k + 1)


def test_k_beyond_int32_safe_limit_is_refused():
    k = int32_safe_k() + 1
    x = np.ones((1, k), dtype=ml_dtypes.bfloat16)
    wq = np.full((k, 1), 127, np.int8)
    s = np.ones(1, np.float32)
    with pytest.raises(NumericsError, match=r"K = 133145 exceeds the int32-safe accumulation depth 133144"):
        gemm_msd_int8(x, wq, s, passes=2)
    # Slices within the limit are fine, even at the worst case of every product = 127 * 127.
    y = gemm_msd_int8(x, wq, s, passes=2, k_tile=int32_safe_k(), out="fp32")
    assert abs(float(y[0, 0]) - gemm_fp64(x, wq)[0, 0]) / (127 * k) < 1e-6
    with pytest.raises(NumericsError, match="K slice = 133145"):
        gemm_msd_int8(x, wq, s, passes=2, k_tile=k)
