"""Vector programs of the attention schedules: which vector instructions each stage issues per element.

The builder emits one VECTOR op per step (npusim.kernels.gemm.quant.emit_program); the cost of a step
is npusim.hw.costs.vector_cycles, so an fp32 step costs twice a bf16 step on the same elements.
"""

from __future__ import annotations

from npusim.kernels.gemm.programs import DEQUANT, VecStep, msd_decompose_steps

_F32 = "fp32"

# int8 K / V block -> bf16: widen, x per-channel scale, narrow (as the weight dequant of the GEMM).
DEQUANT_KV = DEQUANT["int8"]


def q_msd_steps(passes: int) -> tuple[VecStep, ...]:
    """Per Q element, once per work item: widen, x (k_scale x softmax scale), |.|, row max, p passes."""
    return (VecStep("cast", _F32), VecStep("mul", _F32), VecStep("abs", _F32),
            VecStep("reduce_max", _F32)) + msd_decompose_steps(passes)


def softmax_steps(method: str, passes: int, masked: bool) -> tuple[VecStep, ...]:
    """Per score element of a block: form S, (mask), row max, S - m, exp, row sum, then P for the Cube
    (a bf16 cast, or the fixed-scale MSD decomposition)."""
    if method == "msd":
        form = (VecStep("cast", _F32),) * passes + (VecStep("muls", _F32), VecStep("add", _F32)) * (passes - 1) \
            + (VecStep("mul", _F32),)
    else:
        form = (VecStep("muls", _F32),)
    mask = (VecStep("select", _F32),) if masked else ()
    soft = (VecStep("reduce_max", _F32), VecStep("sub", _F32), VecStep("exp", _F32), VecStep("reduce_sum", _F32))
    out = msd_decompose_steps(passes) if method == "msd" else (VecStep("cast", _F32),)
    return form + mask + soft + out


# Per row of a block after the first: m_old - m_new, exp -> alpha, l x alpha + rowsum.
ROW_STATE = (VecStep("sub", _F32), VecStep("exp", _F32), VecStep("mul", _F32), VecStep("add", _F32))


def o_update_steps(method: str, passes: int, first: bool) -> tuple[VecStep, ...]:
    """Per PV element: (MSD: widen and combine the passes; O stays in units of P's scale 1/127, folded
    into the V scale: V_SCALE_MSD), then O x alpha + PV."""
    form = ((VecStep("cast", _F32),) * passes + (VecStep("muls", _F32), VecStep("add", _F32)) * (passes - 1)
            ) if method == "msd" else ()
    upd = (VecStep("copy", _F32),) if first else (VecStep("mul", _F32), VecStep("add", _F32))
    return form + upd


# MSD, once per work item on the Dv channel scales: v_scale x 1/127 (P's fixed scale).
V_SCALE_MSD = (VecStep("muls", _F32),)


def finalize_steps(method: str, out: str = "bf16") -> tuple[VecStep, ...]:
    """Per output element: O / l, (MSD: x v_scale / 127), cast to bf16 (none for an fp32 output)."""
    return ((VecStep("div", _F32),) + ((VecStep("mul", _F32),) if method == "msd" else ())
            + ((VecStep("cast", _F32),) if out == "bf16" else ()))


MERGE_WEIGHTS = (VecStep("reduce_max", _F32), VecStep("sub", _F32), VecStep("exp", _F32), VecStep("mul", _F32),
                 VecStep("add", _F32))
MERGE_ACC = (VecStep("mul", _F32), VecStep("add", _F32))
