"""Closed-form steady-state models of the kernel schedules (DESIGN.md section 6, docs/formulas.md).

    from npusim.model import model_gemm
    r = model_gemm(cfg, m, k, n, "msd", passes=2)   # ModelResult: cycles, bound, traffic by role

Models register per (kernel, method) in npusim.model.base.MODELS; `model_for(kernel, method)` finds one.
"""

from npusim.model.base import GROUPS, ModelResult, group_of, grouped, leader, model_for
from npusim.model.gemm import model_dequant, model_gemm, model_msd, model_native

__all__ = ["GROUPS", "ModelResult", "group_of", "grouped", "leader", "model_for", "model_gemm",
           "model_native", "model_dequant", "model_msd"]
