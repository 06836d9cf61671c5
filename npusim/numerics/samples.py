"""Seeded test data: the three activation distributions of the accuracy study."""

from __future__ import annotations

import numpy as np

from npusim.errors import NumericsError

DISTRIBUTIONS = ("normal", "uniform", "outliers")
OUTLIER_GAIN = 50.0  # LLM activation outlier channels sit ~10-100x above the rest
OUTLIER_EVERY = 256  # one outlier channel per 256 (16 of 4096)


def sample(dist: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """float32 rows x channels: N(0,1), U(-1,1), or N(0,1) with K/256 channels (columns) scaled by 50."""
    rows, cols = shape
    if dist == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if dist == "uniform":
        return rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    if dist == "outliers":
        x = rng.standard_normal(shape, dtype=np.float32)
        channels = rng.choice(cols, size=max(1, cols // OUTLIER_EVERY), replace=False)
        x[:, channels] *= np.float32(OUTLIER_GAIN)
        return x
    raise NumericsError(f"unknown distribution {dist!r} (known: {', '.join(DISTRIBUTIONS)})")
