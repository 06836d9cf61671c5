"""Multi-Scale Dequant with MX activations: p passes of MXFP4 (or MXFP8), the residual re-quantized per block.

Pass 1 MX-quantizes the row blocks of X; pass i+1 MX-quantizes the exact residual x - sum_{j<=i} x_hat_j
with fresh E8M0 scales per block. Residuals are formed in float64, where they are exact: each pass's
element rounds to the nearest grid point and 0 is on the grid, so |residual| <= |x| and it keeps x's
significand width (<= 24 bits). The Cube multiplies each pass by the MX weights (cube.mmad_mx_fp32) and
the Vector sums the p fp32 partials in pass order (msd_mx_combine).

Bound (no-clip scales): |x - x_hat| <= alpha * 2**-((mant_bits + 2) * p) per block, alpha = 2**ceil(log2
max|x_b|): alpha/8 per MXFP4 pass, alpha/64 for two. The OCP rule clips and has no such bound.
"""

from __future__ import annotations

import numpy as np

from npusim.numerics.checks import require_activation, require_dtype, require_passes
from npusim.numerics.mx import MXFP4, MXFormat, MXTensor, mx_format, quantize_mx_f64, require_rule


def msd_mx_decompose(x: np.ndarray, passes: int, *, fmt: str | MXFormat = MXFP4, rule: str = "noclip",
                     axis: int = 1, name: str = "x") -> list[MXTensor]:
    """Decompose a 2-D bf16 / fp16 / fp32 tensor into p MX passes, blocks of 32 along `axis` (K).

    Blockwise, so any tiling of M and of K on block boundaries gives the same elements and scales.
    """
    p = require_passes(passes)
    f = mx_format(fmt)
    require_rule(rule)
    residual = require_activation(name, x, ndim=2)
    out = []
    for _ in range(p):
        t = quantize_mx_f64(residual, f, axis=axis, rule=rule)
        out.append(t)
        residual = residual - t.values_fp64()  # exact (module docstring)
    return out


def msd_mx_reconstruct_fp64(passes: list[MXTensor]) -> np.ndarray:
    """sum_i x_hat_i in float64 (analysis only)."""
    return np.sum([t.values_fp64() for t in passes], axis=0)


def msd_mx_combine(partials: np.ndarray) -> np.ndarray:
    """Vector: C_1 + C_2 + ... in fp32, pass order, each add rounded to nearest even; (p, m, n) -> (m, n)."""
    c = require_dtype("partials", partials, np.float32, ndim=3)
    require_passes(c.shape[0])
    acc = c[0].copy()
    for i in range(1, c.shape[0]):
        acc = acc + c[i]
    return acc
