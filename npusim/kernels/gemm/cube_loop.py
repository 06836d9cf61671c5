"""The AIC side every GEMM schedule shares: L1 / L0 double buffering, the Cube's K loop, the L0C drain.

A schedule decides where the operand chunks come from (a GM load, a GM workspace written by the AIVs, or
an AIV writing straight into L1) and where the accumulator goes (GM through FixPipe with a cast, a
partial-sum workspace, or UB). This class owns the slots and the write-after-read bookkeeping, so every
producer that fills a slot waits for that slot's previous readers.
"""

from __future__ import annotations

from math import ceil

from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import DTYPE_BYTES, Buffer, Path, Role, Unit
from npusim.kernels.gemm.tiling import GemmTiling, split

MMAD_INIT = {"fn": "mmad", "init": True}
MMAD_ACC = {"fn": "mmad", "init": False}


class CubeLoop:
    def __init__(self, g: KernelGraph, aic: Unit, t: GemmTiling, *, a_rows: int, a_dtype: str, b_dtype: str,
                 acc_bytes: int = 4, a_role: Role = Role.ACTIVATION, b_role: Role = Role.WEIGHT,
                 a_resident_k: int | None = None, b_buffers: int = 2):
        """a_rows: rows of the A operand per output tile (m0, or passes x m0 for stacked MSD passes).
        a_resident_k: keep A whole (a_rows x a_resident_k) in one L1 slot instead of chunk by chunk.
        b_buffers: L1 slots for B chunks (2 = double buffering; 3 lets a load run two chunks ahead)."""
        self.g, self.aic, self.t = g, aic, t
        self.a_dtype, self.b_dtype = a_dtype, b_dtype
        self.a_role, self.b_role = a_role, b_role
        c = aic.core
        ab, bb = DTYPE_BYTES[a_dtype], DTYPE_BYTES[b_dtype]
        if a_resident_k:
            self.a1 = [g.slot(f"c{c}.l1.a", aic, Buffer.L1, ceil(a_rows * a_resident_k * ab))]
        else:
            self.a1 = [g.slot(f"c{c}.l1.a{i}", aic, Buffer.L1, ceil(a_rows * t.k1 * ab)) for i in range(2)]
        self.b1 = [g.slot(f"c{c}.l1.b{i}", aic, Buffer.L1, ceil(t.k1 * t.n0 * bb)) for i in range(b_buffers)]
        self.a0 = [g.slot(f"c{c}.l0a.{i}", aic, Buffer.L0A, ceil(a_rows * t.k0 * ab)) for i in range(2)]
        self.b0 = [g.slot(f"c{c}.l0b.{i}", aic, Buffer.L0B, ceil(t.k0 * t.n0 * bb)) for i in range(2)]
        self.acc = [g.slot(f"c{c}.l0c.{i}", aic, Buffer.L0C, a_rows * t.n0 * acc_bytes)
                    for i in range(t.l0c_slots)]
        # Last ops that read each slot: whoever writes the slot next must wait for them.
        self.readers: dict[str, list[int]] = {s: [] for s in (*self.a1, *self.b1, *self.a0, *self.b0, *self.acc)}
        self._l1 = self._l0 = self._tiles = 0

    # ---- L1 chunk slots ---------------------------------------------------------------------------
    def next_l1(self) -> tuple[str, str]:
        """The (A, B) L1 slots for the next K chunk; producers must wait on `self.readers[slot]`."""
        s = self._l1
        self._l1 += 1
        return self.a1[s % len(self.a1)], self.b1[s % len(self.b1)]

    def load_l1(self, name: str, slot: str, path_src, nbytes: int, role: Role, compute=None) -> int:
        """A GM -> L1 load into `slot` (path_src is the GmRef), after the slot's last readers."""
        op = self.g.dma(name, self.aic, Path.GM_TO_L1, nbytes, role, gm=path_src, dst=slot,
                        slot_deps=self.readers[slot], compute=compute)
        self.readers[slot] = []
        return op

    # ---- the Cube's K loop ------------------------------------------------------------------------
    def next_acc(self) -> str:
        slot = self.acc[self._tiles % len(self.acc)]
        self._tiles += 1
        return slot

    def chunk(self, tag: str, sa: str, la: int, sb: str, lb: int, a_rows: int, kt: int, nt: int,
              acc: str, first: bool, mmad_dtype: str, a_col0: int = 0) -> int:
        """MTE1 + CUBE over one L1 chunk (kt of K) in steps of k0; returns the last mmad.
        a_col0: where this chunk starts in the A slot (non-zero when A is resident)."""
        g, aic, t = self.g, self.aic, self.t
        ab, bb = DTYPE_BYTES[self.a_dtype], DTYPE_BYTES[self.b_dtype]
        mm = -1
        for qa, qb in split(kt, t.k0):
            qt = qb - qa
            s0a, s0b = self.a0[self._l0 % 2], self.b0[self._l0 % 2]
            self._l0 += 1
            ma = g.dma(f"l0a{tag}[{qa}]", aic, Path.L1_TO_L0A, ceil(a_rows * qt * ab), self.a_role,
                       src=sa, dst=s0a, deps=[la], slot_deps=self.readers[s0a],
                       compute={"fn": "copy", "sub": ((0, a_rows), (a_col0 + qa, a_col0 + qb))})
            mb = g.dma(f"l0b{tag}[{qa}]", aic, Path.L1_TO_L0B, ceil(qt * nt * bb), self.b_role,
                       src=sb, dst=s0b, deps=[lb], slot_deps=self.readers[s0b],
                       compute={"fn": "copy", "sub": ((qa, qb), (0, nt))})
            self.readers[sa].append(ma)
            self.readers[sb].append(mb)
            mm = g.mmad(f"mmad{tag}[{qa}]", aic, a_rows, qt, nt, mmad_dtype,
                        reads=[s0a, s0b] if first else [s0a, s0b, acc], writes=[acc], deps=[ma, mb],
                        slot_deps=self.readers[acc] if first else (),
                        compute=MMAD_INIT if first else MMAD_ACC)
            self.readers[s0a], self.readers[s0b] = [mm], [mm]
            first = False
        return mm
