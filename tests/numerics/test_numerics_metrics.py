"""Metric formulas on hand-computed cases."""

import math

import numpy as np
import pytest

from npusim.errors import NumericsError
from npusim.numerics.metrics import (
    EFFECTIVE_BITS, bits_range_over_max_err, bits_rel_l2, bits_sqnr, max_abs, max_bound_ratio, rel_l2,
)


def test_formulas():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    x_hat = np.array([[3.0, 4.5], [0.0, 0.0]])
    assert rel_l2(x, x_hat) == pytest.approx(0.5 / 5.0)
    assert max_abs(x, x_hat) == 0.5
    assert bits_rel_l2(x, x_hat) == pytest.approx(math.log2(10))
    assert bits_sqnr(x, x_hat) == pytest.approx((20 * math.log10(10) - 1.76) / 6.02)
    assert bits_sqnr(x, x_hat) == pytest.approx(bits_rel_l2(x, x_hat) - 0.292, abs=1e-3)
    # Row max 4 for row 0; row 1 is all zero with zero error.
    group_max = np.array([[4.0], [0.0]])
    assert bits_range_over_max_err(x, x_hat, group_max) == pytest.approx(math.log2(4 / 0.5))
    assert max_bound_ratio(x, x_hat, np.array([[1.0], [0.0]])) == 0.5
    assert max_bound_ratio(x, x_hat, np.array([[0.0], [1.0]])) == math.inf
    assert set(EFFECTIVE_BITS) == {"log2_range_over_max_err", "neg_log2_rel_l2", "sqnr_enob"}


def test_metric_refusals():
    with pytest.raises(NumericsError, match="shapes"):
        rel_l2(np.zeros(3), np.zeros(4))
    with pytest.raises(NumericsError, match="all zeros"):
        rel_l2(np.zeros(3), np.ones(3))
