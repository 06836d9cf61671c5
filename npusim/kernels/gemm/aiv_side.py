"""What every AIV stage object of the quantized schedules shares: double-buffer turns and UB loads that
wait for the slot's previous readers (write-after-read)."""

from __future__ import annotations

from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import GmRef, Path, Role, Unit
from npusim.kernels.gemm.native import COPY


class AivSide:
    """Subclasses set `g`, `unit`, `readers` ({slot: ops reading it}) and `_turn` ({stage: count})."""

    g: KernelGraph
    unit: Unit
    readers: dict[str, list[int]]
    _turn: dict[str, int]

    def _next(self, stage: str) -> int:
        """Which of a stage's two slot sets to use next."""
        i = self._turn[stage] % 2
        self._turn[stage] += 1
        return i

    def load(self, name: str, dst: str, tensor: str, region, nbytes: int, role: Role, deps=()) -> int:
        """GM -> UB into `dst`, once the slot's previous readers are done."""
        op = self.g.dma(name, self.unit, Path.GM_TO_UB, nbytes, role, gm=GmRef(tensor, region), dst=dst,
                        deps=deps, slot_deps=self.readers[dst], compute=COPY)
        self.readers[dst] = []
        return op
