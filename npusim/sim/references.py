"""Whole-tensor references a graph may name in `reference.fn` / `reference.truth`."""

from __future__ import annotations

from typing import Callable

import numpy as np

from npusim.numerics import reference as ref
from npusim.numerics.intq import int_values_fp64


def gemm_fp64_int(x: np.ndarray, wq: np.ndarray, w_scale: np.ndarray, group_k: int | None = None,
                  **_: object) -> np.ndarray:
    """FP64 truth for integer weights: X @ (q x s), on the exact values the codes stand for."""
    wq, w_scale = np.asarray(wq), np.asarray(w_scale)
    return ref.matmul_fp64_columns(np.asarray(x, dtype=np.float64),
                                   lambda c0, c1: int_values_fp64(wq[:, c0:c1], w_scale[..., c0:c1], group_k),
                                   wq.shape[1])


REFERENCES: dict[str, Callable[..., np.ndarray]] = {
    "gemm_native_bf16": ref.gemm_native_bf16,
    "gemm_fp64": ref.gemm_fp64,
    "gemm_dequant_int": ref.gemm_dequant_int,
    "gemm_msd_int8": ref.gemm_msd_int8,
    "gemm_fp64_int": gemm_fp64_int,
}


def register_reference(name: str, fn: Callable[..., np.ndarray]) -> None:
    REFERENCES[name] = fn
