"""A few threads for the numerics' big elementwise passes (numpy releases the GIL inside its loops).

Only work whose result cannot depend on how it is split is run this way (elementwise passes, exact
max / min), so the thread count never changes a bit of any result. NPUSIM_THREADS (a positive integer)
caps the threads, e.g. to 1 where several simulations share a machine (Dask workers, `sweep --jobs`);
1 also keeps simulate() from forking its reference child (npusim/sim/run.py).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from npusim.errors import NpusimError

T = TypeVar("T")

# Threads for one big pass by default: the machine's cores, at most 4 (beyond that the passes are
# memory-bound). Tests set it; NPUSIM_THREADS overrides it.
THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
MIN_ELEMS_PER_THREAD = 1 << 22  # below this a pass is not worth splitting


def threads() -> int:
    """The thread budget: NPUSIM_THREADS if set, else THREADS."""
    raw = os.environ.get("NPUSIM_THREADS")
    if raw is None or raw == "":
        return THREADS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise NpusimError(f"NPUSIM_THREADS={raw!r}: set it to a positive integer (threads for numerics), or unset it")
    return n


def map_parts(parts: list, fn: Callable[..., T]) -> list[T]:
    """[fn(part) for part in parts], on up to threads() threads, in order."""
    n = threads()
    if n <= 1 or len(parts) <= 1:
        return [fn(p) for p in parts]
    with ThreadPoolExecutor(min(n, len(parts))) as pool:
        return list(pool.map(fn, parts))


def row_parts(rows: int, row_elems: int, step: int = 1) -> list[tuple[int, int]]:
    """Contiguous [r0, r1) ranges of rows (multiples of `step`), one per thread when the pass is big."""
    n = max(1, min(threads(), rows * row_elems // MIN_ELEMS_PER_THREAD, rows // step))
    per = -(-rows // n // step) * step if rows else 0
    return [(r0, min(r0 + per, rows)) for r0 in range(0, rows, per)] if rows else [(0, 0)]
