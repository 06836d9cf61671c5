"""KernelGraph: ops in program order, the buffer slots and GM tensors they use, and builder helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from npusim.graph.ops import (
    Buffer, GmRef, Op, OpKind, PATHS, Path, Pipe, Role, Slot, Tensor, Unit,
)


@dataclass
class KernelGraph:
    """A schedule: a DAG of ops. Program order per pipe is the order of `ops`.

    `reference` names the whole-tensor function whose output the run is checked against:
    {"fn": "gemm_native_bf16", "inputs": ["x", "w"], "output": "y"}.
    """

    name: str
    ops: list[Op] = field(default_factory=list)
    slots: dict[str, Slot] = field(default_factory=dict)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None

    # ---- construction -------------------------------------------------------------------------
    def tensor(self, name: str, shape: Iterable[int], dtype: str, role: Role,
               init: dict[str, Any] | None = None) -> Tensor:
        t = Tensor(name, tuple(int(s) for s in shape), dtype, Role(role), init)
        self.tensors[name] = t
        return t

    def slot(self, name: str, unit: Unit, buffer: Buffer, nbytes: int) -> str:
        self.slots[name] = Slot(name, unit, Buffer(buffer), int(nbytes))
        return name

    def add(self, op: Op) -> int:
        self.ops.append(op)
        return len(self.ops) - 1

    def dma(self, name: str, unit: Unit, path: Path, nbytes: int, role: Role, *,
            gm: GmRef | None = None, src: str | None = None, dst: str | None = None,
            deps: Iterable[int] = (), slot_deps: Iterable[int] = (),
            compute: dict[str, Any] | None = None) -> int:
        """A transfer on `path`; `src`/`dst` are slot names on the on-chip side(s)."""
        path = path if isinstance(path, Path) else Path(path)
        role = role if isinstance(role, Role) else Role(role)
        return self.add(Op(
            name=name, unit=unit, pipe=PATHS[path].pipe, kind=OpKind.DMA, deps=_ids(deps),
            slot_deps=_ids(slot_deps), reads=(src,) if src else (), writes=(dst,) if dst else (),
            path=path, nbytes=int(nbytes), role=role, gm=gm, compute=compute))

    def mmad(self, name: str, unit: Unit, m: int, k: int, n: int, dtype: str, *,
             reads: Iterable[str], writes: Iterable[str], deps: Iterable[int] = (),
             slot_deps: Iterable[int] = (), compute: dict[str, Any] | None = None) -> int:
        return self.add(Op(
            name=name, unit=unit, pipe=Pipe.CUBE, kind=OpKind.MMAD, deps=_ids(deps),
            slot_deps=_ids(slot_deps), reads=tuple(reads), writes=tuple(writes),
            m=int(m), k=int(k), n=int(n), dtype=dtype, compute=compute))

    def vec(self, name: str, unit: Unit, vop: str, elements: int, dtype: str, *,
            reads: Iterable[str] = (), writes: Iterable[str] = (), deps: Iterable[int] = (),
            slot_deps: Iterable[int] = (), compute: dict[str, Any] | None = None) -> int:
        return self.add(Op(
            name=name, unit=unit, pipe=Pipe.VECTOR, kind=OpKind.VEC, deps=_ids(deps),
            slot_deps=_ids(slot_deps), reads=tuple(reads), writes=tuple(writes),
            vop=vop, elements=int(elements), dtype=dtype, compute=compute))

    # ---- queries ------------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        """Units that run at least one op, in a stable order."""
        return sorted({op.unit for op in self.ops}, key=lambda u: (u.core, u.name))

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)


def _ids(values: Iterable[int]) -> tuple[int, ...]:
    # Duplicate edges are harmless but would be waited on twice; keep the first of each. Builders call
    # this for every op, so the common cases (no edge, one edge, distinct edges) take no dict.
    if not values:
        return ()
    t = tuple(values)
    return t if len(t) == 1 or len(set(t)) == len(t) else tuple(dict.fromkeys(t))
