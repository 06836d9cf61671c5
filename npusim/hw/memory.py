"""Shared memory resources: HBM bandwidth apportioned among transfers, and L2 as an LRU tile cache.

HBM model (a bandwidth calendar). Time is cut into windows of W cycles, each holding at most
bandwidth x W bytes. A transfer issued at cycle t with port cap r takes, in each window from t on, the
smaller of what its port allows (r per cycle) and what is left in the window; it ends in the window
where its bytes run out, at the rate it obtained there. So the aggregate never exceeds the chip
bandwidth over any window, a lone transfer never exceeds its port rate, and each transfer's end time is
known when it starts: one simulation event per transfer. Transfers are served in issue order within a
window (first come, first served), which is what a reservation-based memory controller does.
"""

from __future__ import annotations

from collections import OrderedDict
from math import ceil, inf
from typing import Hashable


class BandwidthCalendar:
    def __init__(self, bytes_per_cycle: float, window_cycles: int):
        if bytes_per_cycle <= 0 or window_cycles <= 0:
            raise ValueError("bandwidth and window must be positive")
        self.window_cycles = window_cycles
        self.window_bytes = bytes_per_cycle * window_cycles
        self._used: dict[int, float] = {}
        self._low = 0  # windows before this index are in the past and have been dropped
        self.peak_window_bytes = 0.0  # the most bytes any window carried: <= window_bytes by construction

    def reserve(self, start: int, nbytes: float, cap_bytes_per_cycle: float = inf) -> int:
        """Book `nbytes` from cycle `start` on at most `cap` B/cycle; return the end cycle."""
        if nbytes <= 0:
            return start
        W = self.window_cycles
        w = start // W
        if w - self._low > 4096:
            self._forget_before(w)
        used, full = self._used, self.window_bytes
        t = start
        remaining = float(nbytes)
        while True:
            w_end = (w + 1) * W
            span = w_end - t
            booked = used.get(w, 0.0)
            free = full - booked
            if free > 0:
                rate = free / span
                if cap_bytes_per_cycle < rate:
                    rate = cap_bytes_per_cycle
                if remaining <= rate * span + 1e-9:
                    self._book(w, booked + remaining)
                    return t + max(1, ceil(remaining / rate - 1e-9))
                self._book(w, booked + rate * span)
                remaining -= rate * span
            t = w_end
            w += 1

    def _book(self, window: int, total: float) -> None:
        self._used[window] = total
        if total > self.peak_window_bytes:
            self.peak_window_bytes = total

    def _forget_before(self, window: int) -> None:
        # Reservations only ever start at the current simulated time, so past windows are dead.
        self._used = {w: b for w, b in self._used.items() if w >= window}
        self._low = window


def _covers(intervals, lo: int, hi: int) -> bool:
    """Do the [a, b) intervals cover [lo, hi)?"""
    reach = lo
    for a, b in sorted(intervals):
        if a > reach:
            break
        reach = max(reach, b)
        if reach >= hi:
            return True
    return reach >= hi


class L2Cache:
    """LRU cache of GM tiles, write-back and write-allocate. Keys are (tensor, region).

    Tile granularity: a read hits if the same tensor region was read or written before and is still
    resident, or if written tiles that are still resident and differ from it along one dimension only
    cover it along that dimension (a workspace written piece by piece and read whole). A dirty tile costs
    its bytes in HBM writes when it is evicted, or when the kernel ends (flush).
    """

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self._lines: OrderedDict[Hashable, list] = OrderedDict()  # key -> [nbytes, dirty, role]
        # (tensor, dim, region without dim) -> {key: interval along dim} of resident written tiles
        self._pieces: dict[tuple, dict] = {}
        self._written: set[str] = set()  # tensors with a written tile indexed in _pieces at some point

    def read(self, key: Hashable) -> bool:
        line = self._lines.get(key)
        if line is not None:
            self._lines.move_to_end(key)
            return True
        tensor, region = key
        if tensor not in self._written:
            return False  # only written tiles are indexed by piece: a weight or input read misses here
        for d, (lo, hi) in enumerate(region):
            pieces = self._pieces.get((tensor, d, region[:d] + region[d + 1:]))
            if pieces and _covers(pieces.values(), lo, hi):
                for other, (a, b) in pieces.items():
                    if a < hi and b > lo:
                        self._lines.move_to_end(other)
                return True
        return False

    def _index(self, key, add: bool) -> None:
        tensor, region = key
        if add:
            self._written.add(tensor)
        for d, iv in enumerate(region):
            idx = (tensor, d, region[:d] + region[d + 1:])
            if add:
                self._pieces.setdefault(idx, {})[key] = iv
            else:
                self._pieces.get(idx, {}).pop(key, None)

    def fill(self, key: Hashable, nbytes: int, role: str, dirty: bool) -> list[tuple[int, str]]:
        """Insert or update a tile; return the (bytes, role) of dirty tiles evicted to make room."""
        line = self._lines.get(key)
        if line is not None:
            self._lines.move_to_end(key)
            if dirty and not line[1]:
                self._index(key, add=True)
            line[1] = line[1] or dirty
            return []
        if nbytes > self.capacity_bytes:
            # Larger than the whole cache: streams past it; a write goes straight to HBM.
            return [(nbytes, role)] if dirty else []
        evicted = []
        while self.used_bytes + nbytes > self.capacity_bytes:
            old, (b, d, r) = self._lines.popitem(last=False)
            self.used_bytes -= b
            if d:
                self._index(old, add=False)
                evicted.append((b, r))
        self._lines[key] = [nbytes, dirty, role]
        self.used_bytes += nbytes
        if dirty:
            self._index(key, add=True)
        return evicted

    def dirty_lines(self) -> list[tuple[int, str]]:
        return [(b, r) for b, d, r in self._lines.values() if d]
