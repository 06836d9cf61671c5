"""Whole-tensor reference GEMMs, built on the same Cube primitives the simulated ops call."""

from __future__ import annotations

import numpy as np

from npusim.numerics.cube import mmad_fp32, to_bf16


def gemm_native_bf16(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """bf16 X (M x K) times bf16 W (K x N), fp32 accumulation along ascending K, bf16 output (RNE).

    A schedule that tiles M, N and K and chains each output tile's accumulator through its K steps in
    ascending order reproduces this bit for bit (see npusim.numerics.cube for why tiling cannot matter).
    """
    return to_bf16(mmad_fp32(None, x, w))


def gemm_fp64(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """FP64 ground truth of X @ W on the exact values of the (already quantized) inputs."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(w, dtype=np.float64)
