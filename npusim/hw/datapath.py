"""Real numbers in the machine: GM tensors and the contents of buffer slots.

Each op with a `compute` spec reads its inputs when it starts and writes its outputs when it ends, so a
schedule that lets a tile be overwritten before it is consumed (or consumed before it is written)
produces a wrong output rather than silently correct numbers.

Compute functions are registered by name; the graph names them in `op.compute["fn"]`.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import numpy as np

from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Op, Tensor
from npusim.numerics.cube import mmad_fp32, mmad_int32
from npusim.numerics.dtypes import np_dtype

ComputeFn = Callable[["Datapath", Op, dict], dict[str, np.ndarray]]
COMPUTE: dict[str, ComputeFn] = {}


def register(name: str) -> Callable[[ComputeFn], ComputeFn]:
    """Register a compute function: (datapath, op, spec) -> {destination: array}."""
    def deco(fn: ComputeFn) -> ComputeFn:
        COMPUTE[name] = fn
        return fn
    return deco


def _region(region) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in region)


def init_tensor(t: Tensor, seed: int) -> np.ndarray:
    """Fill a GM tensor per its init spec, deterministically from (run seed, tensor name)."""
    init = t.init or {"kind": "zeros"}
    kind = init.get("kind")
    rng = np.random.default_rng([seed, zlib.crc32(t.name.encode())])
    if kind == "zeros":
        data = np.zeros(t.shape, dtype=np.float32)
    elif kind == "normal":
        data = rng.standard_normal(t.shape, dtype=np.float32) * np.float32(init.get("std", 1.0))
    elif kind == "uniform":
        lo, hi = init.get("low", -1.0), init.get("high", 1.0)
        data = rng.uniform(lo, hi, t.shape).astype(np.float32)
    elif kind == "randint":
        data = rng.integers(init["low"], init["high"], t.shape, endpoint=True)
    else:
        raise GraphError(f"tensor {t.name!r}: unknown init kind {kind!r} (zeros, normal, uniform, randint)")
    return data.astype(np_dtype(t.dtype))


class Datapath:
    def __init__(self, graph: KernelGraph, seed: int, gm: dict[str, np.ndarray] | None = None):
        self.graph = graph
        self.gm: dict[str, np.ndarray] = gm if gm is not None else {
            name: init_tensor(t, seed) for name, t in graph.tensors.items()}
        self.slots: dict[str, np.ndarray] = {}

    def begin(self, op: Op) -> dict[str, np.ndarray] | None:
        spec = op.compute
        if spec is None:
            return None
        fn = COMPUTE.get(spec.get("fn"))
        if fn is None:
            raise GraphError(f"op {op.name!r}: unknown compute function {spec.get('fn')!r} "
                             f"(known: {', '.join(sorted(COMPUTE))})")
        return fn(self, op, spec)

    def commit(self, op: Op, result: dict[str, np.ndarray] | None) -> None:
        if not result:
            return
        for dest, value in result.items():
            if dest.startswith("gm:"):
                region = op.gm.region
                self.gm[op.gm.tensor][_region(region)] = value
            else:
                self.slots[dest] = value

    def read_slot(self, op: Op, name: str) -> np.ndarray:
        value = self.slots.get(name)
        if value is None:
            raise GraphError(f"op {op.name!r} reads slot {name!r} before anything was written to it")
        return value


@register("copy")
def _copy(dp: Datapath, op: Op, spec: dict) -> dict[str, np.ndarray]:
    """A DMA: GM region or source slot -> destination slot or GM region.

    spec: "sub" = [[r0, r1], [c0, c1]] picks a sub-tile of the source slot; "cast" = dtype to round to
    (FixPipe's on-the-fly conversion); "transpose" = true stores the tile transposed.
    """
    if op.path.reads_gm:
        src = dp.gm[op.gm.tensor][_region(op.gm.region)]
    else:
        src = dp.read_slot(op, op.reads[0])
    if "sub" in spec:
        src = src[_region(spec["sub"])]
    if spec.get("transpose"):
        src = src.T
    if "cast" in spec:
        src = src.astype(np_dtype(spec["cast"]))
    dest = "gm:" if op.path.writes_gm else op.writes[0]
    return {dest: np.array(src, copy=True)}


@register("mmad")
def _mmad(dp: Datapath, op: Op, spec: dict) -> dict[str, np.ndarray]:
    """acc (= writes[0]) <- (init ? 0 : acc) + reads[0] @ reads[1]; fp32 for float operands, int32 for ints."""
    a = dp.read_slot(op, op.reads[0])
    b = dp.read_slot(op, op.reads[1])
    acc = None if spec.get("init") else dp.read_slot(op, op.writes[0])
    fn = mmad_int32 if op.dtype in ("int8", "int4") else mmad_fp32
    return {op.writes[0]: fn(acc, a, b)}
