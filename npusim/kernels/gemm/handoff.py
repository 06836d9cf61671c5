"""The dequant baseline's hand-off of dequantized weight chunks from the AIVs to the AIC.

Shared by the integer and MX dequant schedules: the AIVs take pieces in turn; a chunk goes straight into
the AIC's L1 slot where the part has UB->L1 (one piece per chunk), else through a GM workspace, where each
piece is produced once and the AIC reads back the whole L1 chunk, once every piece it covers has been
written, by one DMA per row tile that needs it (the pieces differ along K only, so L2 serves the read
from the resident written pieces).

With one row tile (decode) each chunk is read once, so the workspace is a per-core ring of WORKSPACE_RING
chunk buffers, reused as a real kernel reuses its workspace: a piece waits until the AIC has read the
chunk that last used its ring slot. The ring stays in L2; a workspace the size of W would not, and its
dirty lines would be written back to HBM during the run, taking the weights' bandwidth.
"""

from __future__ import annotations

from typing import Protocol

from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import GmRef, Path, Role, Unit
from npusim.kernels.gemm.cube_loop import CubeLoop
from npusim.kernels.gemm.native import COPY
from npusim.kernels.gemm.tiling import GemmTiling


class DequantSide(Protocol):
    unit: Unit
    out_slot: str
    readers: dict[str, list[int]]

    def dequant(self, tag: str, ka: int, kb: int, c0: int, c1: int) -> int: ...


WORKSPACE_RING = 8  # chunk buffers per core: enough for the AIVs to run well ahead of the AIC


def workspace_is_ring(t: GemmTiling, direct: bool) -> bool:
    """The dequant workspace is the per-core ring when there is one row tile (decode) and no direct path."""
    return not direct and t.tiles_m == 1


def declare_workspace(g: KernelGraph, t: GemmTiling, k: int, n: int, cores: int, direct: bool) -> bool:
    """Declare the GM workspace a dequant schedule hands its chunks over in (none with a direct UB->L1
    path); return whether it is the per-core ring. With one row tile (decode) each chunk is read once, so
    a ring (core, ring slot, chunk rows, chunk columns) suffices; else every row tile re-reads the chunks
    and the workspace is one bf16 copy of W."""
    ring = workspace_is_ring(t, direct)
    if ring:
        g.tensor("w_deq", (cores, WORKSPACE_RING, t.k1, t.n0), "bf16", Role.WORKSPACE)
    elif not direct:
        g.tensor("w_deq", (k, n), "bf16", Role.WORKSPACE)
    g.meta["workspace"] = "ring" if ring else None if direct else "whole"
    return ring


class WeightHandoff:
    def __init__(self, g: KernelGraph, aic: Unit, aivs: list[DequantSide], direct: bool, ring: bool = False):
        """ring: the GM workspace is the per-core ring declare_workspace made (one row tile only)."""
        self.g, self.aic, self.aivs, self.direct, self.ring = g, aic, aivs, direct, ring
        self._produced: dict[tuple, int] = {}  # (pa, c0) -> op that wrote the piece to the workspace
        self._turn = 0
        self._chunks = 0  # chunks handed over so far: chunk j uses ring slot j % WORKSPACE_RING
        self._slot_reader: dict[int, int] = {}  # ring slot -> the AIC read of the chunk that used it last

    def _next_aiv(self) -> DequantSide:
        aiv = self.aivs[self._turn % len(self.aivs)]
        self._turn += 1
        return aiv

    def chunk(self, loop: CubeLoop, sb: str, ka: int, kb: int, c0: int, c1: int,
              pieces: list[tuple[int, int]] | None = None) -> int:
        """Bring the bf16 weight chunk [ka, kb) x [c0, c1) into L1 slot `sb`; return the op that lands it.
        pieces: the AIV dequant pieces [pa, pb) that make up [ka, kb) in ascending K (default: one)."""
        g = self.g
        pieces = pieces or [(ka, kb)]
        nbytes = (kb - ka) * (c1 - c0) * 2
        tag = f"[{ka}:{kb},{c0}:{c1}]"
        if self.direct:
            if pieces != [(ka, kb)]:
                raise GraphError(f"a UB->L1 hand-off moves whole chunks: chunk {tag} came in {len(pieces)} pieces")
            aiv = self._next_aiv()
            out = aiv.dequant(tag, ka, kb, c0, c1)
            lb = g.dma(f"ub2l1_w{tag}", aiv.unit, Path.UB_TO_L1, nbytes, Role.WEIGHT, src=aiv.out_slot,
                       dst=sb, deps=[out], slot_deps=loop.readers[sb], compute=COPY)
            aiv.readers[aiv.out_slot].append(lb)
        elif self.ring:
            slot = self._chunks % WORKSPACE_RING
            self._chunks += 1
            core = self.aic.core
            free = [self._slot_reader[slot]] if slot in self._slot_reader else []
            written = []
            for pa, pb in pieces:
                ptag = f"[{pa}:{pb},{c0}:{c1}]"
                aiv = self._next_aiv()
                out = aiv.dequant(ptag, pa, pb, c0, c1)
                region = ((core, core + 1), (slot, slot + 1), (pa - ka, pb - ka), (0, c1 - c0))
                st = g.dma(f"st_wdeq{ptag}", aiv.unit, Path.UB_TO_GM, (pb - pa) * (c1 - c0) * 2,
                           Role.WORKSPACE, gm=GmRef("w_deq", region), src=aiv.out_slot, deps=[out],
                           slot_deps=free, compute=COPY)
                aiv.readers[aiv.out_slot].append(st)
                written.append(st)
            region = ((core, core + 1), (slot, slot + 1), (0, kb - ka), (0, c1 - c0))
            lb = g.dma(f"ld_wdeq{tag}", self.aic, Path.GM_TO_L1, nbytes, Role.WORKSPACE, gm=GmRef("w_deq", region),
                       dst=sb, deps=written, slot_deps=loop.readers[sb],
                       compute={**COPY, "reshape": [kb - ka, c1 - c0]})
            self._slot_reader[slot] = lb
        else:
            written = []
            for pa, pb in pieces:
                if (pa, c0) not in self._produced:
                    ptag = f"[{pa}:{pb},{c0}:{c1}]"
                    aiv = self._next_aiv()
                    out = aiv.dequant(ptag, pa, pb, c0, c1)
                    st = g.dma(f"st_wdeq{ptag}", aiv.unit, Path.UB_TO_GM, (pb - pa) * (c1 - c0) * 2,
                               Role.WORKSPACE, gm=GmRef("w_deq", ((pa, pb), (c0, c1))), src=aiv.out_slot,
                               deps=[out], compute=COPY)
                    aiv.readers[aiv.out_slot].append(st)
                    self._produced[(pa, c0)] = st
                written.append(self._produced[(pa, c0)])
            lb = g.dma(f"ld_wdeq{tag}", self.aic, Path.GM_TO_L1, nbytes, Role.WORKSPACE,
                       gm=GmRef("w_deq", ((ka, kb), (c0, c1))), dst=sb, deps=written, slot_deps=loop.readers[sb],
                       compute=COPY)
        loop.readers[sb] = []
        return lb
