"""Integer and MX formats: scales, codes, dequant tiles, packing and byte counts."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npusim.errors import NumericsError
from npusim.numerics.cube import to_bf16
from npusim.numerics.intq import dequant_int_tile, quantize_weights_int
from npusim.numerics.mx import (
    MXFP4, MXFP8, block_alpha, dequant_mx_tile, e8m0_exponent, e8m0_from_exponent, quantize_mx, scale_exponent,
)
from npusim.numerics.packing import (
    pack_int_weights, pack_mx, pack_nibbles, packed_nbytes, unpack_int_weights, unpack_mx, unpack_nibbles,
)

RNG = np.random.default_rng(1234)


@pytest.mark.parametrize("bits,group_k", [(8, None), (8, 128), (4, 128), (4, 32)])
def test_int_weights_codes_and_error(bits, group_k):
    w = RNG.standard_normal((256, 40)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero channel
    iw = quantize_weights_int(w, bits=bits, group_k=group_k)
    top = 2 ** (bits - 1) - 1
    assert iw.q.dtype == np.int8 and np.abs(iw.q).max() == top
    s = iw.scale_per_element().astype(np.float64)
    # Absmax quantization: every weight within half a step of its code.
    assert np.all(np.abs(iw.values_fp64() - w) <= s / 2 * (1 + 1e-6))
    assert np.all(iw.q[:, 3] == 0)


def test_int_weights_refuse_float64_and_nan():
    with pytest.raises(NumericsError, match="float64"):
        quantize_weights_int(np.zeros((4, 4)))
    w = np.ones((4, 4), np.float32)
    w[2, 1] = np.nan
    with pytest.raises(NumericsError, match=r"'w'.*NaN.*\(2, 1\)"):
        quantize_weights_int(w)


def test_dequant_int_tile_is_fp32_multiply_then_bf16_and_tiling_free():
    w = RNG.standard_normal((256, 64)).astype(np.float32)
    iw = quantize_weights_int(w, bits=4, group_k=128)
    whole = dequant_int_tile(iw.q, iw.scale, 128)
    want = to_bf16(iw.q.astype(np.float32) * np.repeat(iw.scale, 128, axis=0))
    assert np.array_equal(whole.view(np.uint16), want.view(np.uint16))
    tile = dequant_int_tile(iw.q[128:256, 16:48], iw.scale[1:2, 16:48], 128)
    assert np.array_equal(tile.view(np.uint16), whole[128:256, 16:48].view(np.uint16))


def test_dequant_int_tile_refuses_float64_scales():
    with pytest.raises(NumericsError, match="scale_tile"):
        dequant_int_tile(np.zeros((4, 4), np.int8), np.ones(4))


@settings(max_examples=300)
@given(st.floats(min_value=2.0**-100, max_value=2.0**100, allow_nan=False))
def test_scale_rules(amax):
    for fmt in (MXFP4, MXFP8):
        e_ocp = int(scale_exponent(np.array([amax]), fmt, "ocp")[0])
        # floor(log2 amax) - emax, checked exactly (math.log2 itself rounds 2**49 - 1 up to 49.0).
        assert 2.0 ** (e_ocp + fmt.emax) <= amax < 2.0 ** (e_ocp + fmt.emax + 1)
        e_nc = int(scale_exponent(np.array([amax]), fmt, "noclip")[0])
        # The smallest power of two that avoids clipping.
        assert amax <= fmt.max_value * 2.0**e_nc
        assert amax > fmt.max_value * 2.0 ** (e_nc - 1)


def test_e8m0_exponents_are_not_rounded_up():
    # amax = 1.5 * 2**3: floor(log2) = 3. Casting 1.5 * 2**k to float8_e8m0fnu would round the halfway
    # case up to 2**(k+1); the exponent here must stay exact.
    assert int(scale_exponent(np.array([12.0]), MXFP4, "ocp")[0]) == 3 - 2
    assert ml_dtypes.float8_e8m0fnu(12.0) == 16.0  # the pitfall this library avoids
    e = np.array([-127, -3, 0, 5, 127])
    assert e8m0_exponent(e8m0_from_exponent(e)).tolist() == e.tolist()
    assert e8m0_from_exponent(e).view(np.uint8).tolist() == (e + 127).tolist()
    with pytest.raises(NumericsError):
        e8m0_from_exponent(np.array([128]))


def test_zero_block_and_alpha():
    x = np.zeros((2, 64), np.float32)
    x[1, 32:] = 3.0
    t = quantize_mx(x, "mxfp4", axis=1)
    assert e8m0_exponent(t.scales)[0].tolist() == [-127, -127]
    assert np.array_equal(t.values_fp64(), x)
    assert block_alpha(x, 1).tolist() == [[0.0, 0.0], [0.0, 4.0]]


def test_ocp_rule_saturates_never_nan():
    x = RNG.standard_normal((8, 256)).astype(np.float32) * 1000
    for fmt in ("mxfp4", "mxfp8"):
        t = quantize_mx(x, fmt, axis=1, rule="ocp")
        v = t.values_fp64()
        assert np.isfinite(v).all()
        top = {"mxfp4": 6.0, "mxfp8": 448.0}[fmt]
        assert np.abs(t.elems.astype(np.float64)).max() == top  # saturated somewhere, as the rule implies


def test_mx_weights_blocked_along_k_match_activation_layout():
    w = RNG.standard_normal((128, 24)).astype(np.float32)
    a = quantize_mx(w, "mxfp8", axis=0)
    b = quantize_mx(np.ascontiguousarray(w.T), "mxfp8", axis=1)
    assert np.array_equal(a.values_fp64(), b.values_fp64().T)
    d = dequant_mx_tile(a.elems[32:96, 8:16], a.scales[1:3, 8:16], axis=0)
    assert np.array_equal(d.astype(np.float64), a.values_fp64()[32:96, 8:16])


def test_mx_refuses_bad_input():
    with pytest.raises(NumericsError, match="multiple of 32"):
        quantize_mx(np.ones((2, 40), np.float32), "mxfp4", axis=1)
    with pytest.raises(NumericsError, match="scale rule"):
        quantize_mx(np.ones((2, 32), np.float32), "mxfp4", axis=1, rule="round")
    x = np.ones((2, 64), np.float32)
    x[1, 40] = -np.inf
    with pytest.raises(NumericsError, match=r"'act'.*Inf.*\(1, 40\)"):
        quantize_mx(x, "mxfp4", axis=1, name="act")


def test_nibble_packing_roundtrip_and_order():
    codes = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.uint8)
    packed = pack_nibbles(codes)
    assert packed.tolist() == [[0x31, 0x42], [0x05, 0x06]]
    assert np.array_equal(unpack_nibbles(packed, 3), codes)


@pytest.mark.parametrize("k,n", [(256, 48), (384, 7)])
def test_packed_sizes_are_the_real_byte_counts(k, n):
    w = RNG.standard_normal((k, n)).astype(np.float32)
    for bits, group in ((8, None), (8, 128), (4, 128)):
        iw = quantize_weights_int(w, bits=bits, group_k=group)
        p = pack_int_weights(iw)
        assert p.nbytes == packed_nbytes(iw.fmt, k, n)
        back = unpack_int_weights(p)
        assert np.array_equal(back.q, iw.q) and np.array_equal(back.scale, iw.scale)
    for fmt in ("mxfp4", "mxfp8"):
        t = quantize_mx(w, fmt, axis=0)
        p = pack_mx(t)
        assert p.nbytes == packed_nbytes(fmt, k, n)
        assert np.array_equal(unpack_mx(p).values_fp64(), t.values_fp64())
    assert packed_nbytes("int4-g128", 4096, 4096) == 4096 * 2048 + 4 * 32 * 4096
    assert packed_nbytes("mxfp4", 4096, 4096) == 4096 * 2048 + 128 * 4096
    assert packed_nbytes("bf16", 3, 5) == 30
    with pytest.raises(NumericsError, match="unknown weight format"):
        packed_nbytes("int3", 4, 4)
