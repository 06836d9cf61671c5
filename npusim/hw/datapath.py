"""Real numbers in the machine: GM tensors and the contents of buffer slots.

Each op with a `compute` spec reads its inputs when it starts and writes its outputs when it ends, so a
schedule that lets a tile be overwritten before it is consumed (or consumed before it is written)
produces a wrong output rather than silently correct numbers.

Compute functions are registered by name; the graph names them in `op.compute["fn"]`.
"""

from __future__ import annotations

import functools
import zlib
from typing import Callable

import numpy as np

from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Op, Path, Tensor
from npusim.numerics.cube import mmad_fp32, mmad_int32
from npusim.numerics.dtypes import np_dtype
from npusim.numerics.parallel import map_parts

ComputeFn = Callable[["Datapath", Op, dict], dict[str, np.ndarray]]
COMPUTE: dict[str, ComputeFn] = {}


def register(name: str) -> Callable[[ComputeFn], ComputeFn]:
    """Register a compute function: (datapath, op, spec) -> {destination: array}."""
    def deco(fn: ComputeFn) -> ComputeFn:
        COMPUTE[name] = fn
        return fn
    return deco


@functools.lru_cache(maxsize=1 << 16)
def _region_cached(region: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in region)


def _region(region) -> tuple[slice, ...]:
    try:
        return _region_cached(region)  # GM regions are tuples: built once per distinct region
    except TypeError:  # a list (e.g. a "sub" read from JSON)
        return tuple(slice(a, b) for a, b in region)


InitFn = Callable[[Tensor, dict, "Inputs"], np.ndarray]
_NORMAL_BLOCK = 1 << 20  # normal samples per random stream (rounded to whole leading rows)
INITS: dict[str, InitFn] = {}


def register_init(kind: str) -> Callable[[InitFn], InitFn]:
    """Register a tensor init kind: (tensor, spec, inputs) -> array (cast to the tensor's dtype after)."""
    def deco(fn: InitFn) -> InitFn:
        INITS[kind] = fn
        return fn
    return deco


class Inputs:
    """Deterministic input data: every random stream is keyed by (run seed, a name), and derived data
    (e.g. quantized weights and their scales, made from one float tensor) is computed once and shared."""

    def __init__(self, seed: int):
        self.seed = seed
        self.cache: dict = {}

    def rng(self, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def random(self, key: str, shape: tuple[int, ...], spec: dict, dtype: np.dtype | None = None) -> np.ndarray:
        """The random tensor of `key` (float32 for normal / uniform, int64 for randint), or cast to `dtype`."""
        kind = spec.get("kind", "normal")
        if kind == "normal":
            return self.normal(key, tuple(shape), spec, None if dtype is None else np.dtype(dtype))
        rng = self.rng(key)
        if kind == "uniform":
            data = rng.uniform(spec.get("low", -1.0), spec.get("high", 1.0), shape).astype(np.float32)
        elif kind == "randint":
            data = rng.integers(spec["low"], spec["high"], shape, endpoint=True)
        else:
            raise GraphError(f"unknown random init kind {kind!r} (normal, uniform, randint)")
        return data if dtype is None else data.astype(dtype)

    def normal(self, key: str, shape: tuple[int, ...], spec: dict, dtype: np.dtype | None = None) -> np.ndarray:
        """N(0, std^2) float32 samples (with `outlier_channels` of the last axis scaled), cast to `dtype`.

        A 70B layer draws ~0.9 G samples, so they are drawn in blocks of whole leading rows (about
        _NORMAL_BLOCK elements), each from its own stream keyed by (seed, key, block index), by a few
        threads (numpy's generators release the GIL). The values depend on the seed, the key and the shape
        only (and on _NORMAL_BLOCK: retuning it changes every input), never on the thread count; a cast
        tensor is cast block by block, without a float32 copy of the whole. SFC64 rather than the default
        PCG64: twice as fast for float32 normals here.
        """
        dt = np.dtype(np.float32) if dtype is None else dtype
        shape2 = shape if len(shape) > 1 else (1, int(np.prod(shape)))  # a vector is one row
        out = np.empty(shape2, dtype=dt)
        row = int(np.prod(shape2[1:]))
        step = max(1, _NORMAL_BLOCK // max(1, row))
        blocks = [(j, r0, min(r0 + step, shape2[0])) for j, r0 in enumerate(range(0, shape2[0], step))]
        crc = zlib.crc32(key.encode())
        std = np.float32(spec.get("std", 1.0))
        outliers = [(int(c), np.float32(f)) for c, f in (spec.get("outlier_channels") or {}).items()]

        def fill(block: tuple[int, int, int]) -> None:
            j, r0, r1 = block
            gen = np.random.Generator(np.random.SFC64(np.random.SeedSequence([self.seed, crc, j])))
            data = out[r0:r1] if dt == np.float32 else np.empty((r1 - r0,) + shape2[1:], np.float32)
            gen.standard_normal(dtype=np.float32, out=data)
            if std != 1:
                data *= std  # in place: the same fp32 products as `data * std`, without a second array
            for col, factor in outliers:
                data[..., col] *= factor
            if dt != np.float32:
                out[r0:r1] = data

        map_parts(blocks, fill)
        return out.reshape(shape)

    def tensor(self, t: Tensor) -> np.ndarray:
        spec = t.init or {"kind": "zeros"}
        kind = spec.get("kind")
        if kind == "zeros":
            return np.zeros(t.shape, dtype=np_dtype(t.dtype))
        if kind in INITS:
            return np.asarray(INITS[kind](t, spec, self))
        if kind in ("normal", "uniform", "randint"):
            return self.random(t.name, t.shape, spec, np_dtype(t.dtype))
        raise GraphError(f"tensor {t.name!r}: unknown init kind {kind!r} "
                         f"(zeros, normal, uniform, randint, {', '.join(INITS)})")


class Datapath:
    def __init__(self, graph: KernelGraph, seed: int, gm: dict[str, np.ndarray] | None = None):
        self.graph = graph
        if gm is None:
            inputs = Inputs(seed)
            gm = {name: inputs.tensor(t) for name, t in graph.tensors.items()}
        self.gm: dict[str, np.ndarray] = gm
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
            if dest == "gm:":
                region = _region(op.gm.region)
                view = self.gm[op.gm.tensor][region]
                view[...] = value.reshape(view.shape)
            elif dest.startswith("sub:"):
                # part of a slot: the rest of the slot keeps what it held (as a real buffer would)
                name = dest[4:]
                sub, shape, data = value
                cur = self.slots.get(name)
                if cur is None or cur.shape != tuple(shape) or cur.dtype != data.dtype:
                    cur = self.slots[name] = np.zeros(shape, dtype=data.dtype)
                cur[_region(sub)] = data
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

    spec: "view" = shape to see the source as first; "sub" = [[r0, r1], [c0, c1]] picks a sub-tile of the
    source; "reshape" = shape to view the
    source as (e.g. a (passes, rows, k) GM region as (passes x rows, k)); "cast" = dtype to round to
    (FixPipe's on-the-fly conversion); "dst_sub" + "dst_shape" = write into that region of a destination
    slot of that shape. A GM destination takes the region's shape.
    """
    # a vector "copy" (op.path is None) moves between two UB slots
    path = op.path
    if path is not None and _READS_GM[path]:
        src = dp.gm[op.gm.tensor][_region(op.gm.region)]
    else:
        src = dp.read_slot(op, op.reads[0])
    fresh = False
    if len(spec) > 1:  # anything besides "fn"
        if "view" in spec:
            src = src.reshape(spec["view"])
        if "sub" in spec:
            src = src[_region(spec["sub"])]
        if "reshape" in spec:
            src = src.reshape(spec["reshape"])
        if "cast" in spec:
            src, fresh = src.astype(np_dtype(spec["cast"])), True
    # A snapshot: the source region or slot may be overwritten before this op's result is committed.
    data = src if fresh else np.array(src, copy=True)
    if path is not None and _WRITES_GM[path]:
        return {"gm:": data}
    if "dst_sub" in spec:
        return {"sub:" + op.writes[0]: (spec["dst_sub"], spec["dst_shape"], data)}
    return {op.writes[0]: data}


_READS_GM = {p: p.reads_gm for p in Path}
_WRITES_GM = {p: p.writes_gm for p in Path}


@register("mmad")
def _mmad(dp: Datapath, op: Op, spec: dict) -> dict[str, np.ndarray]:
    """acc (= writes[0]) <- (init ? 0 : acc) + reads[0] @ reads[1]; fp32 for float operands, int32 for ints."""
    a = dp.read_slot(op, op.reads[0])
    b = dp.read_slot(op, op.reads[1])
    acc = None if spec.get("init") else dp.read_slot(op, op.writes[0])
    fn = mmad_int32 if op.dtype in ("int8", "int4") else mmad_fp32
    return {op.writes[0]: fn(acc, a, b)}
