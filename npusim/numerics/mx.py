"""OCP MX block formats: 32 elements along K sharing one E8M0 (power-of-two) scale.

Elements: MXFP4 = E2M1 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6), MXFP8 = E4M3 (max 448). A block's real values
are element * 2**e, e in [-127, 127] (E8M0 code e + 127; code 255 is NaN and never produced).

Two rules choose e from the block's amax:
- "ocp":    e = floor(log2 amax) - emax_elem (OCP MX v1.0, section 6.3; emax_elem = 2 for E2M1, 8 for E4M3).
            amax / 2**e lies in [2**emax, 2**(emax+1)), so elements above the format's max (6 or 448)
            saturate to +-max: this rule clips by design.
- "noclip": the smallest e with amax <= max_elem * 2**e: never clips, at most one binade coarser.
Both are clamped to [-127, 127]; an all-zero block gets e = -127 (code 0). Exponents are computed exactly
here (frexp and comparisons), not by casting to float8_e8m0fnu, which rounds halfway cases up.
Elements are rounded to nearest, ties to even, saturating (npusim.numerics.rounding.round_to_minifloat).
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from npusim.errors import NumericsError
from npusim.numerics.checks import ACTIVATION_DTYPES, require_dtype, require_finite, require_multiple
from npusim.numerics.cube import to_bf16
from npusim.numerics.rounding import round_to_minifloat

MX_BLOCK = 32
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127
SCALE_RULES = ("ocp", "noclip")


@dataclass(frozen=True)
class MXFormat:
    name: str
    elem_dtype: np.dtype
    elem_bits: int
    mant_bits: int
    min_normal_exp: int
    max_value: float
    emax: int  # floor(log2(max_value)): the exponent of the largest binade

    def pass_bound_factor(self, passes: int) -> float:
        """Error bound of p no-clip passes as a fraction of alpha = 2**ceil(log2 amax): 2**-(mant_bits+2)*p.

        One pass: the no-clip scale is alpha / 2**(emax+1) or alpha / 2**emax, and in either case the top
        binade's half-quantum times the scale is alpha * 2**-(mant_bits + 2) (alpha/8 for E2M1, alpha/32
        for E4M3). Each further pass quantizes a residual whose own alpha is at most that, so the factors
        multiply: alpha/64 for two MXFP4 passes (docs/numerics.md).
        """
        return 2.0 ** (-(self.mant_bits + 2) * passes)


MXFP4 = MXFormat("mxfp4", np.dtype(ml_dtypes.float4_e2m1fn), 4, 1, 0, 6.0, 2)
MXFP8 = MXFormat("mxfp8", np.dtype(ml_dtypes.float8_e4m3fn), 8, 3, -6, 448.0, 8)
MX_FORMATS = {f.name: f for f in (MXFP4, MXFP8)}


def mx_format(name: str | MXFormat) -> MXFormat:
    if isinstance(name, MXFormat):
        return name
    try:
        return MX_FORMATS[name]
    except KeyError:
        raise NumericsError(f"unknown MX format {name!r} (known: {', '.join(MX_FORMATS)})") from None


def require_rule(rule: str) -> str:
    if rule not in SCALE_RULES:
        raise NumericsError(f"unknown MX scale rule {rule!r} (known: {', '.join(SCALE_RULES)})")
    return rule


@dataclass(frozen=True, eq=False)
class MXTensor:
    """Elements (fmt.elem_dtype) and E8M0 scales; `axis` is the blocked (K) axis of a 2-D tensor."""

    elems: np.ndarray
    scales: np.ndarray  # float8_e8m0fnu, the elems' shape with the blocked axis divided by 32
    fmt: MXFormat
    axis: int

    def values_fp64(self) -> np.ndarray:
        """Exact real values: element * 2**e."""
        scale = np.repeat(np.ldexp(1.0, e8m0_exponent(self.scales)), MX_BLOCK, axis=self.axis)
        return elems_to_float(self.elems, np.float64) * scale  # exact: a power-of-two scaling


def elems_to_float(elems: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Exact values of E2M1 / E4M3 elements as float32 or float64, through a 256-entry table of codes.

    Same result as elems.astype(dtype), about 3x faster than ml_dtypes' cast on large weights.
    """
    el = np.asarray(elems)
    if el.dtype not in (MXFP4.elem_dtype, MXFP8.elem_dtype):
        raise NumericsError(f"expected float4_e2m1fn or float8_e4m3fn elements, got {el.dtype}")
    table = _code_table(el.dtype, np.dtype(dtype))
    return table[el.view(np.uint8)]


_TABLES: dict[tuple[np.dtype, np.dtype], np.ndarray] = {}


def _code_table(elem_dtype: np.dtype, dtype: np.dtype) -> np.ndarray:
    key = (elem_dtype, dtype)
    if key not in _TABLES:
        codes = np.arange(256, dtype=np.uint8)
        if elem_dtype == MXFP4.elem_dtype:
            codes = codes & 0x0F  # E2M1 lives in the low nibble of its byte; the high bits are unused
        with np.errstate(invalid="ignore"):
            _TABLES[key] = codes.view(elem_dtype).astype(dtype)
    return _TABLES[key]


def e8m0_from_exponent(e: np.ndarray) -> np.ndarray:
    """Encode integer exponents in [-127, 127] as float8_e8m0fnu (exact: powers of two need no rounding)."""
    e = np.asarray(e)
    if e.size and (e.min() < E8M0_MIN_EXP or e.max() > E8M0_MAX_EXP):
        raise NumericsError(f"E8M0 exponent out of range [{E8M0_MIN_EXP}, {E8M0_MAX_EXP}]")
    return np.ldexp(np.float32(1.0), e.astype(np.int32)).astype(E8M0)


def e8m0_exponent(scales: np.ndarray) -> np.ndarray:
    """Integer exponents (int32) of float8_e8m0fnu scales."""
    s = require_dtype("scales", scales, E8M0)
    vals = s.astype(np.float64)
    if np.isnan(vals).any():
        raise NumericsError("E8M0 scales contain the NaN code 255")
    _, e = np.frexp(vals)
    return (e - 1).astype(np.int32)


def block_amax(x64: np.ndarray, axis: int) -> np.ndarray:
    """Per-block max |x| (float64), blocks of 32 along `axis` of a 2-D array."""
    amax = np.abs(_blocked(x64, axis)).max(axis=-1)  # (other, n_blocks)
    return np.moveaxis(amax, -1, axis % 2)


def block_alpha(x: np.ndarray, axis: int) -> np.ndarray:
    """alpha = 2**ceil(log2 amax) per block (0 for an all-zero block): the unit of the MX error bounds."""
    amax = block_amax(np.asarray(x, dtype=np.float64), axis)
    m, e = np.frexp(amax)  # amax = m * 2**e, m in [0.5, 1): ceil(log2 amax) = e - 1 if m == 0.5 else e
    ceil_log2 = np.where(m == 0.5, e - 1, e)
    return np.where(amax > 0, np.ldexp(1.0, ceil_log2), 0.0)


def scale_exponent(amax: np.ndarray, fmt: MXFormat, rule: str) -> np.ndarray:
    """E8M0 exponent per block from its amax under `rule`, clamped to [-127, 127]."""
    require_rule(rule)
    amax = np.asarray(amax, dtype=np.float64)
    _, e = np.frexp(amax)
    e_ocp = e.astype(np.int64) - 1 - fmt.emax  # floor(log2 amax) - emax_elem, exact
    if rule == "ocp":
        exp = e_ocp
    else:
        # amax < 2**(emax+1) * 2**e_ocp <= 2 * max_value * 2**e_ocp: one step up at most.
        exp = e_ocp + (amax > np.ldexp(fmt.max_value, e_ocp))
    exp = np.where(amax > 0, exp, E8M0_MIN_EXP)
    return np.clip(exp, E8M0_MIN_EXP, E8M0_MAX_EXP).astype(np.int32)


def quantize_mx_f64(x: np.ndarray, fmt: MXFormat, *, axis: int, rule: str) -> MXTensor:
    """MX-quantize exact values (validated float32 or float64): scales from the block amax, RNE elements.

    Works through slabs of rows so the float64 temporaries of a large weight stay in cache; blocks never
    straddle a slab, so the result is the same as one whole-tensor pass.
    """
    if x.ndim != 2:
        raise NumericsError(f"MX quantization expects a 2-D tensor, got shape {x.shape}")
    axis = axis % 2
    require_multiple("length of the blocked axis", x.shape[axis], MX_BLOCK)
    rows, cols = x.shape
    step = MX_BLOCK if axis == 0 else 1
    slab = max(step, (_SLAB_ELEMS // max(cols, 1)) // step * step)
    elems = np.empty(x.shape, dtype=fmt.elem_dtype)
    exps = np.empty((rows // MX_BLOCK, cols) if axis == 0 else (rows, cols // MX_BLOCK), dtype=np.int32)
    for r0 in range(0, rows, slab):
        r1 = min(r0 + slab, rows)
        x64 = x[r0:r1].astype(np.float64)
        exp = scale_exponent(block_amax(x64, axis), fmt, rule)
        # Dividing by a power of two is exact in float64; the element rounding is the only rounding.
        scaled = x64 * np.repeat(np.ldexp(1.0, -exp), MX_BLOCK, axis=axis)
        q = round_to_minifloat(scaled, mant_bits=fmt.mant_bits, min_normal_exp=fmt.min_normal_exp,
                               max_value=fmt.max_value)
        elems[r0:r1] = q.astype(np.float32).astype(fmt.elem_dtype)  # on the grid: both casts are exact
        exps[r0 // step:r1 // step] = exp
    return MXTensor(elems, e8m0_from_exponent(exps), fmt, axis)


_SLAB_ELEMS = 1 << 16


def quantize_mx(x: np.ndarray, fmt: str | MXFormat, *, axis: int, rule: str = "noclip",
                name: str = "x") -> MXTensor:
    """MX-quantize a 2-D bf16 / fp16 / fp32 tensor in blocks of 32 along `axis` (the K axis).

    Activations X (M x K) use axis=1, weights W (K x N) axis=0.
    """
    a = require_dtype(name, x, *ACTIVATION_DTYPES, ndim=2)
    require_finite(name, a)
    return quantize_mx_f64(a.astype(np.float32), mx_format(fmt), axis=axis, rule=require_rule(rule))


def dequant_mx_tile(elems: np.ndarray, scales: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Vector dequant of an MX tile to bf16: fp32(elem) * fp32(2**e), then bf16 (both round-to-nearest-even).

    For E2M1 and E4M3 elements the product is exact unless it falls below fp32's normal range, and bf16
    holds it exactly, so this is the exact MX value in practice. The tile must start on a block boundary.
    """
    el = np.asarray(elems)
    if el.dtype not in (MXFP4.elem_dtype, MXFP8.elem_dtype) or el.ndim != 2:
        raise NumericsError(f"MX elements must be a 2-D float4_e2m1fn or float8_e4m3fn tile, got "
                            f"{el.dtype} with shape {el.shape}")
    s32 = np.repeat(np.ldexp(np.float32(1.0), e8m0_exponent(scales)).astype(np.float32), MX_BLOCK, axis=axis % 2)
    if s32.shape != el.shape:
        raise NumericsError(f"MX scales cover shape {s32.shape}, element tile is {el.shape}")
    return to_bf16(elems_to_float(el, np.float32) * s32)


def require_mx_weights(elems: np.ndarray, scales: np.ndarray, name: str = "w") -> np.ndarray:
    """Check K x N MX weights (blocks along K): element dtype, finiteness, scale dtype and shape."""
    el = np.asarray(elems)
    if el.dtype not in (MXFP4.elem_dtype, MXFP8.elem_dtype) or el.ndim != 2:
        raise NumericsError(f"tensor {name!r}: MX weight elements must be a 2-D float4_e2m1fn or "
                            f"float8_e4m3fn array, got {el.dtype} with shape {el.shape}")
    require_finite(name, el)
    sc = require_dtype(f"{name} scales", scales, E8M0, ndim=2)
    if el.shape[0] % MX_BLOCK or sc.shape != (el.shape[0] // MX_BLOCK, el.shape[1]):
        raise NumericsError(f"tensor {name!r}: {el.shape} elements need ({el.shape[0] // MX_BLOCK}, "
                            f"{el.shape[1]}) scales (blocks of {MX_BLOCK} along K), got {sc.shape}")
    return el


def _blocked(x: np.ndarray, axis: int) -> np.ndarray:
    """View a 2-D array as (..., n_blocks, 32) with the blocked axis last."""
    xm = np.moveaxis(x, axis % 2, -1)
    require_multiple("length of the blocked axis", xm.shape[-1], MX_BLOCK)
    return xm.reshape(xm.shape[:-1] + (xm.shape[-1] // MX_BLOCK, MX_BLOCK))
