"""Kernels by name: how `run`, `compare`, `sweep` and `verify` build a schedule from options.

`build(kernel, cfg, options)` returns the KernelGraph; `methods(kernel, cfg)` lists the methods the
preset can run. Options are plain values (ints, strings), as they come from a command line or a sweep grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.graph.kernel_graph import KernelGraph
from npusim.kernels.gemm.quant import build_gemm


@dataclass(frozen=True)
class KernelSpec:
    name: str
    options: dict[str, str]  # option -> help text (with unit)
    defaults: dict[str, Any]
    builder: Callable[..., KernelGraph]
    methods: Callable[[HardwareConfig], list[str]]


def _gemm_methods(cfg: HardwareConfig) -> list[str]:
    """(method, weights) pairs the preset runs, as 'method' names for comparisons over int8 weights."""
    return ["native", "dequant", "msd"]


KERNELS: dict[str, KernelSpec] = {
    "gemm": KernelSpec(
        name="gemm",
        options={"m": "rows of X (tokens)", "k": "inner dimension", "n": "output channels",
                 "cores": "AI-core groups to use", "method": "native | dequant | msd | direct",
                 "weights": "bf16 | int8 | int8-g128 | mxfp4", "passes": "MSD passes"},
        defaults={"cores": None, "method": "native", "weights": "bf16", "passes": 2},
        builder=build_gemm,
        methods=_gemm_methods,
    ),
}


def kernel(name: str) -> KernelSpec:
    try:
        return KERNELS[name]
    except KeyError:
        raise NpusimError(f"unknown kernel {name!r} (known: {', '.join(KERNELS)})") from None


def build(name: str, cfg: HardwareConfig, options: dict[str, Any]) -> KernelGraph:
    spec = kernel(name)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise NpusimError(f"{name}: unknown option(s) {', '.join(sorted(unknown))} "
                          f"(options: {', '.join(spec.options)})")
    return spec.builder(cfg, **{**spec.defaults, **options})
