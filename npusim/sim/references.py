"""Whole-tensor references a graph may name in `reference.fn` / `reference.truth`."""

from __future__ import annotations

from typing import Callable

import numpy as np

from npusim.numerics import reference as ref

REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "gemm_native_bf16": ref.gemm_native_bf16,
    "gemm_fp64": ref.gemm_fp64,
}


def register_reference(name: str, fn: Callable[..., np.ndarray]) -> None:
    REFERENCES[name] = fn
