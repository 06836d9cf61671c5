"""A few threads for the numerics' big elementwise passes (numpy releases the GIL inside its loops).

Only work whose result cannot depend on how it is split is run this way (elementwise passes, exact
max / min), so the thread count never changes a bit of any result.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

# Threads for one big pass: the machine's cores, at most 4 (beyond that the passes are memory-bound).
THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
MIN_ELEMS_PER_THREAD = 1 << 22  # below this a pass is not worth splitting


def map_parts(parts: list, fn: Callable[..., T], threads: int | None = None) -> list[T]:
    """[fn(part) for part in parts], on up to `threads` (default THREADS) threads, in order."""
    n = THREADS if threads is None else threads
    if n <= 1 or len(parts) <= 1:
        return [fn(p) for p in parts]
    with ThreadPoolExecutor(min(n, len(parts))) as pool:
        return list(pool.map(fn, parts))


def row_parts(rows: int, row_elems: int, step: int = 1) -> list[tuple[int, int]]:
    """Contiguous [r0, r1) ranges of rows (multiples of `step`), one per thread when the pass is big."""
    n = max(1, min(THREADS, rows * row_elems // MIN_ELEMS_PER_THREAD, rows // step))
    per = -(-rows // n // step) * step if rows else 0
    return [(r0, min(r0 + per, rows)) for r0 in range(0, rows, per)] if rows else [(0, 0)]
