"""The vocabulary of kernel graphs: pipes, data paths, byte roles, and the op record itself.

Nothing here knows about simpy or about a particular preset: an op says what it does and what it costs
in hardware-independent terms (bytes and path, m x k x n and dtype, elements and vector op); the hardware
layer turns that into cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class Pipe(StrEnum):
    MTE1 = "MTE1"
    MTE2 = "MTE2"
    MTE3 = "MTE3"
    CUBE = "CUBE"
    VECTOR = "VECTOR"
    FIXP = "FIXP"


class UnitKind(StrEnum):
    AIC = "aic"
    AIV = "aiv"


_AIC, _AIV = UnitKind.AIC, UnitKind.AIV

PIPES_OF = {
    UnitKind.AIC: (Pipe.MTE2, Pipe.MTE1, Pipe.CUBE, Pipe.FIXP),
    UnitKind.AIV: (Pipe.MTE2, Pipe.VECTOR, Pipe.MTE3),
}


class Buffer(StrEnum):
    L1 = "l1"
    L0A = "l0a"
    L0B = "l0b"
    L0C = "l0c"
    UB = "ub"


BUFFERS_OF = {
    UnitKind.AIC: (Buffer.L1, Buffer.L0A, Buffer.L0B, Buffer.L0C),
    UnitKind.AIV: (Buffer.UB,),
}


@dataclass(frozen=True)
class PathSpec:
    """A data path: which unit's pipe drives it, and what it reads from / writes to."""

    unit: UnitKind
    pipe: Pipe
    src: str  # "gm" or a Buffer value
    dst: str


class Path(StrEnum):
    GM_TO_L1 = "gm_to_l1"
    GM_TO_UB = "gm_to_ub"
    UB_TO_GM = "ub_to_gm"
    L1_TO_L0A = "l1_to_l0a"
    L1_TO_L0B = "l1_to_l0b"
    L0C_TO_GM = "l0c_to_gm"
    L0C_TO_L1 = "l0c_to_l1"
    UB_TO_L1 = "ub_to_l1"
    L0C_TO_UB = "l0c_to_ub"

    @property
    def spec(self) -> PathSpec:
        return PATHS[self]

    @property
    def reads_gm(self) -> bool:
        return PATHS[self].src == "gm"

    @property
    def writes_gm(self) -> bool:
        return PATHS[self].dst == "gm"


PATHS = {
    Path.GM_TO_L1: PathSpec(UnitKind.AIC, Pipe.MTE2, "gm", "l1"),
    Path.GM_TO_UB: PathSpec(UnitKind.AIV, Pipe.MTE2, "gm", "ub"),
    Path.UB_TO_GM: PathSpec(UnitKind.AIV, Pipe.MTE3, "ub", "gm"),
    Path.L1_TO_L0A: PathSpec(UnitKind.AIC, Pipe.MTE1, "l1", "l0a"),
    Path.L1_TO_L0B: PathSpec(UnitKind.AIC, Pipe.MTE1, "l1", "l0b"),
    Path.L0C_TO_GM: PathSpec(UnitKind.AIC, Pipe.FIXP, "l0c", "gm"),
    Path.L0C_TO_L1: PathSpec(UnitKind.AIC, Pipe.FIXP, "l0c", "l1"),
    # Direct paths (950-class parts): the AIV's MTE3 writes into the AIC's L1, the AIC's FixPipe into UB.
    Path.UB_TO_L1: PathSpec(UnitKind.AIV, Pipe.MTE3, "ub", "l1"),
    Path.L0C_TO_UB: PathSpec(UnitKind.AIC, Pipe.FIXP, "l0c", "ub"),
}


class Role(StrEnum):
    """What the bytes a transfer moves are, for the traffic ledger."""

    WEIGHT = "weight"
    WEIGHT_SCALE = "weight_scale"
    ACTIVATION = "activation"
    KV_CACHE = "kv_cache"
    WORKSPACE = "workspace"
    PARTIAL = "partial"
    OUTPUT = "output"


class OpKind(StrEnum):
    DMA = "dma"
    MMAD = "mmad"
    VEC = "vec"


# Bytes per element of the dtypes ops may name. Sub-byte types are packed two per byte.
DTYPE_BYTES = {"fp32": 4.0, "int32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "fp8": 1.0,
               "mxfp8": 1.0, "int4": 0.5, "fp4": 0.5, "mxfp4": 0.5}


@dataclass(frozen=True, slots=True)
class Unit:
    """One AIC or AIV of one core group: (core, "aic") or (core, "aiv0"/"aiv1"...)."""

    core: int
    name: str  # "aic", "aiv0", "aiv1", ...

    @property
    def kind(self) -> UnitKind:
        return _AIC if self.name == "aic" else _AIV

    @property
    def aiv_index(self) -> int:
        return int(self.name[3:]) if self.kind is UnitKind.AIV else -1

    def __str__(self) -> str:
        return f"core{self.core}.{self.name}"


@dataclass(frozen=True, slots=True)
class Slot:
    """A statically allocated region of an on-chip buffer (as Ascend C's TPipe::InitBuffer makes them).

    A slot is live for the whole kernel, so the buffer-capacity check is the sum of its slots' bytes.
    """

    name: str
    unit: Unit
    buffer: Buffer
    nbytes: int


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor in global memory (HBM, cached by L2)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: Role
    init: dict[str, Any] | None = None  # how to fill it for numerics: {"kind": "normal", "seed": 0, ...}


@dataclass(frozen=True, slots=True)
class GmRef:
    """The region of a GM tensor a DMA touches: per-dimension [start, stop) bounds.

    The region is also the L2 cache key: L2 is modelled at tile granularity.
    """

    tensor: str
    region: tuple[tuple[int, int], ...]


class Op(NamedTuple):
    """One hardware operation bound to one pipe of one unit.

    `deps` are data dependencies (read-after-write); `slot_deps` wait for a buffer slot to be free
    (write-after-read). Both delay the op identically; they differ in how a stall is attributed.
    Program order on a pipe is the order of ops in the graph.

    A named tuple rather than a frozen dataclass: as immutable, and four times cheaper to build, which
    matters at a few hundred thousand ops per graph.
    """

    name: str
    unit: Unit
    pipe: Pipe
    kind: OpKind
    deps: tuple[int, ...] = ()
    slot_deps: tuple[int, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    # DMA cost inputs
    path: Path | None = None
    nbytes: int = 0
    role: Role | None = None
    gm: GmRef | None = None
    # MMAD cost inputs
    m: int = 0
    k: int = 0
    n: int = 0
    dtype: str | None = None
    # VEC cost inputs
    vop: str | None = None
    elements: int = 0
    # What the op does to real numbers: {"fn": name, ...params}; None = timing only.
    compute: dict[str, Any] | None = None

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n if self.kind is OpKind.MMAD else 0
