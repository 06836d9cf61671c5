"""Saving and loading kernel graphs as JSON, so schedules can be written or edited by hand.

The file is validated at the boundary (pydantic): a wrong key or type names its place in the file,
e.g. `ops.3.pipe`. Format: {"format": "npusim-graph/1", "name", "meta", "tensors": [...],
"slots": [...], "ops": [...], "reference"}; ops list in program order and refer to each other by index.
"""

from __future__ import annotations

import json
from pathlib import Path as FsPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Buffer, GmRef, Op, OpKind, Path, Pipe, Role, Slot, Tensor, Unit
from npusim.io import atomic_write_text

FORMAT = "npusim-graph/1"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorIn(_M):
    name: str
    shape: list[int]
    dtype: str
    role: Role
    init: dict[str, Any] | None = None


class SlotIn(_M):
    name: str
    core: int = Field(ge=0)
    unit: str = Field(pattern=r"^(aic|aiv[0-9]+)$")
    buffer: Buffer
    bytes: int = Field(gt=0)


class GmIn(_M):
    tensor: str
    region: list[tuple[int, int]]


class OpIn(_M):
    name: str
    core: int = Field(ge=0)
    unit: str = Field(pattern=r"^(aic|aiv[0-9]+)$")
    pipe: Pipe
    kind: OpKind
    deps: list[int] = []
    slot_deps: list[int] = []
    reads: list[str] = []
    writes: list[str] = []
    path: Path | None = None
    bytes: int = 0
    role: Role | None = None
    gm: GmIn | None = None
    m: int = 0
    k: int = 0
    n: int = 0
    dtype: str | None = None
    vop: str | None = None
    elements: int = 0
    compute: dict[str, Any] | None = None


class GraphFile(_M):
    format: Literal["npusim-graph/1"]
    name: str
    meta: dict[str, Any] = {}
    tensors: list[TensorIn] = []
    slots: list[SlotIn] = []
    ops: list[OpIn]
    reference: dict[str, Any] | None = None


def graph_to_dict(g: KernelGraph) -> dict[str, Any]:
    def op_dict(op: Op) -> dict[str, Any]:
        d: dict[str, Any] = {"name": op.name, "core": op.unit.core, "unit": op.unit.name,
                             "pipe": op.pipe.value, "kind": op.kind.value}
        for key in ("deps", "slot_deps", "reads", "writes"):
            if getattr(op, key):
                d[key] = list(getattr(op, key))
        if op.kind is OpKind.DMA:
            d.update(path=op.path.value, bytes=op.nbytes, role=op.role.value)
            if op.gm is not None:
                d["gm"] = {"tensor": op.gm.tensor, "region": [list(r) for r in op.gm.region]}
        elif op.kind is OpKind.MMAD:
            d.update(m=op.m, k=op.k, n=op.n, dtype=op.dtype)
        else:
            d.update(vop=op.vop, elements=op.elements, dtype=op.dtype)
        if op.compute is not None:
            d["compute"] = _jsonable(op.compute)
        return d

    return {
        "format": FORMAT, "name": g.name, "meta": g.meta,
        "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "role": t.role.value,
                     "init": t.init} for t in g.tensors.values()],
        "slots": [{"name": s.name, "core": s.unit.core, "unit": s.unit.name, "buffer": s.buffer.value,
                   "bytes": s.nbytes} for s in g.slots.values()],
        "ops": [op_dict(op) for op in g.ops],
        "reference": g.reference,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _tuplify(x: Any) -> Any:
    # Regions come back from JSON as lists; compute specs use tuples so they stay hashable and equal.
    if isinstance(x, dict):
        return {k: _tuplify(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuplify(v) for v in x)
    return x


def graph_from_dict(data: Any, source: str = "graph") -> KernelGraph:
    try:
        f = GraphFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:12]]
        raise GraphError(f"{source}: not a valid npusim graph:\n" + "\n".join(lines)) from None
    g = KernelGraph(name=f.name, meta=f.meta, reference=f.reference)
    for t in f.tensors:
        g.tensors[t.name] = Tensor(t.name, tuple(t.shape), t.dtype, t.role, t.init)
    for s in f.slots:
        g.slots[s.name] = Slot(s.name, Unit(s.core, s.unit), s.buffer, s.bytes)
    for o in f.ops:
        g.ops.append(Op(
            name=o.name, unit=Unit(o.core, o.unit), pipe=o.pipe, kind=o.kind, deps=tuple(o.deps),
            slot_deps=tuple(o.slot_deps), reads=tuple(o.reads), writes=tuple(o.writes), path=o.path,
            nbytes=o.bytes, role=o.role,
            gm=GmRef(o.gm.tensor, tuple(tuple(r) for r in o.gm.region)) if o.gm else None,
            m=o.m, k=o.k, n=o.n, dtype=o.dtype, vop=o.vop, elements=o.elements,
            compute=_tuplify(o.compute) if o.compute else None))
    return g


def save_graph(g: KernelGraph, path: str | FsPath) -> None:
    atomic_write_text(path, json.dumps(graph_to_dict(g), separators=(",", ":")) + "\n")


def load_graph(path: str | FsPath) -> KernelGraph:
    p = FsPath(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphError(f"{p}: no such file") from None
    except OSError as exc:
        raise GraphError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return graph_from_dict(data, str(p))
