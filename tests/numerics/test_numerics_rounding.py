"""The two rounding rules: exact, and the ones they claim to be."""

from fractions import Fraction
import math

import ml_dtypes
import numpy as np
from hypothesis import given, settings, strategies as st

from npusim.numerics.rounding import round_half_away, round_to_minifloat

E2M1 = dict(mant_bits=1, min_normal_exp=0, max_value=6.0)
E4M3 = dict(mant_bits=3, min_normal_exp=-6, max_value=448.0)


def _half_away_exact(v: float) -> float:
    f = Fraction(v)
    n = math.floor(abs(f) + Fraction(1, 2))
    return float(n if f >= 0 else -n)


def test_ties_go_away_from_zero():
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 126.5, -126.5])
    assert round_half_away(x).tolist() == [1.0, -1.0, 2.0, 3.0, -3.0, 127.0, -127.0]


def test_no_spurious_round_up_below_a_half():
    # 0.49999999999999994 + 0.5 rounds to 1.0 in float64: the naive floor(|x| + 0.5) gets this wrong.
    assert round_half_away(np.array([0.49999999999999994, -0.49999999999999994])).tolist() == [0.0, 0.0]
    assert round_half_away(np.array([2.0**52 + 1])).tolist() == [2.0**52 + 1]


@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_round_half_away_matches_exact_rationals(v):
    assert round_half_away(np.array([v]))[0] == _half_away_exact(v)


def test_minifloat_ties_to_even_and_saturation():
    x = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0, -5.0])
    assert round_to_minifloat(x, **E2M1).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -4.0]
    # E4M3 saturates at 448 where ml_dtypes' cast would give NaN.
    assert round_to_minifloat(np.array([464.0, 500.0, -1e30]), **E4M3).tolist() == [448.0, 448.0, -448.0]


def test_minifloat_single_rounding_from_float64():
    # Just above the tie between 0 and 0.5: the nearest E2M1 value is 0.5. ml_dtypes rounds through fp32
    # and gets 0.
    assert round_to_minifloat(np.array([0.25 + 2.0**-40]), **E2M1)[0] == 0.5


@settings(max_examples=300)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=64))
def test_minifloat_matches_ml_dtypes_on_float32(vals):
    v = np.array(vals, dtype=np.float32)
    for dtype, params in ((ml_dtypes.float4_e2m1fn, E2M1), (ml_dtypes.float8_e4m3fn, E4M3)):
        top = np.float32(params["max_value"])
        want = np.clip(v, -top, top).astype(dtype).astype(np.float64)
        got = round_to_minifloat(v.astype(np.float64), **params)
        assert np.array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))
