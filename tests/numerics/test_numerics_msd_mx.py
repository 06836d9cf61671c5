"""MX MSD: the alpha-based bounds (no-clip scales), their attainment, and the effective-bits figures."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npusim.errors import NumericsError
from npusim.numerics.cube import mmad_mx_fp32
from npusim.numerics.metrics import bits_rel_l2, max_bound_ratio
from npusim.numerics.msd_mx import msd_mx_combine, msd_mx_decompose, msd_mx_reconstruct_fp64
from npusim.numerics.mx import MXFP4, MXFP8, MX_BLOCK, block_alpha, quantize_mx

# Blocks whose no-clip exponent would fall below E8M0's -127 are outside the bound (docs/numerics.md):
# keep magnitudes at 0 or in [2**-90, 2**100].
magnitudes = st.one_of(
    st.just(0.0),
    st.floats(min_value=2.0**-90, max_value=2.0**100, width=32),
    st.floats(min_value=0.5, max_value=8.0, width=32),
)
values = st.tuples(magnitudes, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])


@st.composite
def blocks(draw):
    n_blocks = draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["any", "one_scale", "equal"]))
    if kind == "equal":
        vals = [draw(values)] * (MX_BLOCK * n_blocks)
    elif kind == "one_scale":
        scale = draw(st.floats(min_value=2.0**-60, max_value=2.0**60, width=32))
        vals = [draw(st.floats(-1.0, 1.0, width=32)) * scale for _ in range(MX_BLOCK * n_blocks)]
    else:
        vals = draw(st.lists(values, min_size=MX_BLOCK * n_blocks, max_size=MX_BLOCK * n_blocks))
    return np.array([vals], dtype=np.float32)


def _ratios(x, fmt, passes, rule="noclip"):
    """max error / bound after 1, 2, ..., `passes` passes (the passes of p are a prefix of those of p + 1)."""
    comps = msd_mx_decompose(x, passes, fmt=fmt, rule=rule, axis=1)
    alpha = np.repeat(block_alpha(x, 1), MX_BLOCK, axis=1)
    # x - x_hat and alpha * 2**-k are exact in float64, so these comparisons are exact.
    return [max_bound_ratio(x, msd_mx_reconstruct_fp64(comps[:p]), alpha * fmt.pass_bound_factor(p))
            for p in range(1, passes + 1)]


def _ratio(x, fmt, passes, rule="noclip"):
    return _ratios(x, fmt, passes, rule)[-1]


@settings(max_examples=200, deadline=None)
@given(blocks())
def test_mxfp4_bounds_never_exceeded(x):
    # alpha / 8, alpha / 64, alpha / 512
    assert max(_ratios(x, MXFP4, 3)) <= 1.0


@settings(max_examples=120, deadline=None)
@given(blocks())
def test_mxfp8_bound_never_exceeded(x):
    assert _ratio(x, MXFP8, 1) <= 1.0  # alpha / 32


@pytest.mark.parametrize("fmt,passes", [(MXFP4, 1), (MXFP4, 2), (MXFP8, 1)])
def test_bounds_attained_on_gaussian(fmt, passes):
    x = np.random.default_rng(11).standard_normal((32, 2048), dtype=np.float32)
    assert 0.99 < _ratio(x, fmt, passes) <= 1.0


def test_ocp_rule_breaks_the_alpha_bound():
    # The OCP exponent saturates the block top: the residual of pass 1 can reach alpha/4, not alpha/8.
    x = np.random.default_rng(11).standard_normal((32, 2048), dtype=np.float32)
    assert _ratio(x, MXFP4, 2, rule="ocp") > 1.5


def test_mxfp8_one_pass_effective_bits_5_24():
    x = np.random.default_rng(0).standard_normal((64, 4096), dtype=np.float32)
    x_hat = msd_mx_reconstruct_fp64(msd_mx_decompose(x, 1, fmt=MXFP8, axis=1))
    assert abs(bits_rel_l2(x, x_hat) - 5.24) <= 0.05


def test_mxfp4_two_pass_effective_bits_6_6_on_uniform():
    x = np.random.default_rng(0).uniform(-1, 1, (64, 4096)).astype(np.float32)
    x_hat = msd_mx_reconstruct_fp64(msd_mx_decompose(x, 2, fmt=MXFP4, axis=1))
    assert abs(bits_rel_l2(x, x_hat) - 6.6) <= 0.1
    # ...and not on Gaussian data, where the same metric gives about 6.16 (docs/numerics.md).
    g = np.random.default_rng(0).standard_normal((64, 4096), dtype=np.float32)
    g_hat = msd_mx_reconstruct_fp64(msd_mx_decompose(g, 2, fmt=MXFP4, axis=1))
    assert abs(bits_rel_l2(g, g_hat) - 6.16) <= 0.1


def test_passes_are_blockwise_and_combine_in_order():
    x = np.random.default_rng(2).standard_normal((4, 256), dtype=np.float32)
    whole = msd_mx_decompose(x, 2)
    part = msd_mx_decompose(x[:, 64:128], 2)
    for w, p in zip(whole, part):
        assert np.array_equal(w.elems[:, 64:128].view(np.uint8), p.elems.view(np.uint8))
        assert np.array_equal(w.scales[:, 2:4].view(np.uint8), p.scales.view(np.uint8))
    c = np.random.default_rng(3).standard_normal((3, 2, 5)).astype(np.float32)
    assert np.array_equal(msd_mx_combine(c), (c[0] + c[1]) + c[2])
    with pytest.raises(NumericsError):
        msd_mx_combine(c.astype(np.float64))


def test_mmad_mx_semantics():
    rng = np.random.default_rng(4)
    a = quantize_mx(rng.standard_normal((3, 96), dtype=np.float32) * 100, "mxfp8", axis=1)
    b = quantize_mx(rng.standard_normal((96, 5), dtype=np.float32), "mxfp4", axis=0)
    got = mmad_mx_fp32(None, a.elems, a.scales, b.elems, b.scales)
    av, bv = a.values_fp64(), b.values_fp64()
    want = np.zeros((3, 5), np.float32)
    for blk in range(3):
        s = slice(blk * 32, blk * 32 + 32)
        want += (av[:, s] @ bv[s]).astype(np.float32)  # exact block dot, one rounding, fp32 add
    assert np.array_equal(got, want)
    # Chaining the accumulator over K tiles on block boundaries changes nothing.
    first = mmad_mx_fp32(None, a.elems[:, :64], a.scales[:, :2], b.elems[:64], b.scales[:2])
    chained = mmad_mx_fp32(first, a.elems[:, 64:], a.scales[:, 2:], b.elems[64:], b.scales[2:])
    assert np.array_equal(chained, got)
