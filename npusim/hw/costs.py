"""Every op-duration formula of the model, in one place (DESIGN.md section 2.2).

Pure functions of the config and an op's cost inputs. The schedule builders' tiling search and the
closed-form models call these too, so a formula changed here changes all of them together.
"""

from __future__ import annotations

from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.graph.ops import DTYPE_BYTES, Path, Unit


def cube_k0(cfg: HardwareConfig, dtype: str) -> int:
    """K elements per fractal step; fp32 runs on the fp16 fractal at `fp32_cycle_factor` cycles/step."""
    if dtype == "fp32":
        return cfg.cube.k0["fp16"]
    return cfg.cube.k0[dtype]


def cube_supports(cfg: HardwareConfig, dtype: str) -> bool:
    return dtype in cfg.cube.k0 or (dtype == "fp32" and "fp16" in cfg.cube.k0)


def mmad_steps(cfg: HardwareConfig, m: int, k: int, n: int, dtype: str) -> int:
    """Fractal steps: ceil(m/16) * ceil(k/k0[dtype]) * ceil(n/16), x fp32_cycle_factor for fp32."""
    steps = ceil(m / cfg.cube.fractal_m) * ceil(k / cube_k0(cfg, dtype)) * ceil(n / cfg.cube.fractal_n)
    return steps * cfg.cube.fp32_cycle_factor if dtype == "fp32" else steps


def mmad_cycles(cfg: HardwareConfig, m: int, k: int, n: int, dtype: str) -> int:
    """start_cycles + fractal steps (one step per cycle)."""
    return cfg.cube.start_cycles + mmad_steps(cfg, m, k, n, dtype)


def cube_macs_per_cycle(cfg: HardwareConfig, dtype: str) -> int:
    """Peak MACs per cycle of one Cube for `dtype` (4096 for bf16 on 16x16x16)."""
    macs = cfg.cube.fractal_m * cube_k0(cfg, dtype) * cfg.cube.fractal_n
    return macs // cfg.cube.fp32_cycle_factor if dtype == "fp32" else macs


def vector_repeats(cfg: HardwareConfig, elements: int, dtype: str) -> int:
    return ceil(elements * DTYPE_BYTES[dtype] / cfg.vector.repeat_bytes)


def vector_cycles(cfg: HardwareConfig, vop: str, elements: int, dtype: str) -> int:
    """start_cycles + ceil(repeats * cycles_per_repeat[vop]), repeats = ceil(E * bytes(dtype) / 256)."""
    return cfg.vector.start_cycles + ceil(vector_repeats(cfg, elements, dtype) * cfg.vector.cycles_per_repeat[vop])


def vector_cycles_per_element(cfg: HardwareConfig, vop: str, dtype: str) -> float:
    """The steady-state part of vector_cycles per element: bytes(dtype) / 256 x cycles_per_repeat[vop]."""
    return DTYPE_BYTES[dtype] / cfg.vector.repeat_bytes * cfg.vector.cycles_per_repeat[vop]


def port(cfg: HardwareConfig, path: Path | str):
    p = getattr(cfg.dma, path)  # Path is a str enum: its value is the config field name
    if p is None:
        raise KeyError(f"path {path} is absent on {cfg.meta.name}")
    return p


def transfer_cycles(nbytes: int, rate_bytes_per_cycle: float) -> int:
    """Cycles to move `nbytes` at a fixed rate, rounded up to whole cycles."""
    return ceil(nbytes / rate_bytes_per_cycle)


def dma_cycles_uncontended(cfg: HardwareConfig, path: Path, nbytes: int) -> int:
    """start + B / port rate: a transfer that gets its full port rate (on-chip paths, or no contention)."""
    p = port(cfg, path)
    return p.start_cycles + transfer_cycles(nbytes, p.rate_bytes_per_cycle)


def flag_cycles(cfg: HardwareConfig, producer: Unit, consumer: Unit, same_pipe: bool) -> int:
    """Latency between a producer's end and a dependent op's earliest start.

    Same pipe: program order, no flag. Same unit, other pipe: an intra-core set/wait flag. Another unit
    (AIC<->AIV, or another core): a cross-core flag.
    """
    if producer == consumer:
        return 0 if same_pipe else cfg.sync.intra_core_flag_cycles
    return cfg.sync.cross_core_flag_cycles
