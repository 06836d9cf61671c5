"""Pause Python's cyclic garbage collector around allocation-heavy phases (graph build, simulation).

Building and running a graph allocates several small objects per op and frees almost none of them until
the end; every generation-2 collection re-traverses all of them, which cost about a third of a 166k-op
run. The objects involved hold no reference cycles that need collecting mid-run (reference counting
frees the rest), so the pause changes memory by nothing but the garbage that waits for the final sweep.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
