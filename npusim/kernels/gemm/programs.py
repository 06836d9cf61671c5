"""Vector programs of the quantized GEMM schedules: which vector instructions each stage issues per
element. The schedule builders emit one VECTOR op per step; the closed-form model (npusim.model) counts
the same steps, so the two cannot drift apart.

A step's dtype sets its lane width: repeats = ceil(elements x bytes(dtype) / 256), so an fp32 step costs
twice a bf16 step on the same elements (npusim.hw.costs.vector_cycles).
"""

from __future__ import annotations

from dataclasses import dataclass
from npusim.config.schema import HardwareConfig
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Unit
from npusim.hw import costs


@dataclass(frozen=True)
class VecStep:
    vop: str
    dtype: str


_F32 = "fp32"

# Dequantize a weight tile to bf16: widen, multiply by the scale, narrow (DESIGN.md 4.1, 2-5 ops).
DEQUANT = {
    "int8": (VecStep("cast", _F32), VecStep("mul", _F32), VecStep("cast", _F32)),
    "int8-g128": (VecStep("cast", _F32), VecStep("mul", _F32), VecStep("cast", _F32)),
    # fp4 codes are unpacked to fp16 first, then widened; the E8M0 scale is applied as a multiply
    "mxfp4": (VecStep("cast", "fp16"), VecStep("cast", _F32), VecStep("mul", _F32), VecStep("cast", _F32)),
}

# MSD, per activation element: the row max (widen, |x|, reduce), then per pass the rounding chain.
MSD_ABSMAX = (VecStep("cast", _F32), VecStep("abs", _F32), VecStep("reduce_max", _F32))


def msd_decompose_steps(passes: int) -> tuple[VecStep, ...]:
    """Pass 1: a = x * 127/M, round, cast to int8; pass i > 1: residual (sub), x254, round, cast."""
    first = (VecStep("muls", _F32), VecStep("round", _F32), VecStep("cast", _F32))
    more = (VecStep("sub", _F32), VecStep("muls", _F32), VecStep("round", _F32), VecStep("cast", _F32))
    return first + more * (passes - 1)


def msd_recombine_steps(passes: int) -> tuple[VecStep, ...]:
    """Per output element: widen each int32 pass, weight passes 2.. by 1/254^(i-1) and add, multiply by
    the row scale and the weight scale, cast to bf16."""
    return ((VecStep("cast", _F32),) * passes + (VecStep("muls", _F32), VecStep("add", _F32)) * (passes - 1)
            + (VecStep("mul", _F32), VecStep("mul", _F32), VecStep("cast", _F32)))


def program_cycles(cfg: HardwareConfig, steps: tuple[VecStep, ...], elements: int) -> int:
    """Cycles of a program on one AIV over `elements` (one instruction per step)."""
    return sum(costs.vector_cycles(cfg, s.vop, elements, s.dtype) for s in steps)


def cycles_per_element(cfg: HardwareConfig, steps: tuple[VecStep, ...]) -> float:
    """Steady-state vector cycles per element of a program (no start costs): the c of DESIGN.md 6."""
    return sum(costs.vector_cycles_per_element(cfg, s.vop, s.dtype) for s in steps)


def emit_program(g: KernelGraph, unit: Unit, tag: str, steps, elements: int, first: dict,
                 last: dict | None = None) -> list[int]:
    """Emit a vector program, one VECTOR op per step. `first` / `last` are the keyword arguments of the
    first and last step (deps, slots read and written, compute); the steps between are timing only,
    ordered by the pipe's program order."""
    ids = []
    for i, st in enumerate(steps):
        kw = dict(first) if i == 0 else {}
        if last and i == len(steps) - 1:
            kw.update(last)
        ids.append(g.vec(f"{st.vop}{tag}", unit, st.vop, elements, st.dtype, **kw))
    return ids
