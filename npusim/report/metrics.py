"""Run metrics as functions of the op records. Every metric here is defined in docs/metrics.md."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from npusim.graph.ops import Role
from npusim.hw.records import OpRecord, WritebackRecord

UNIT_KEYS = ("cube", "vector", "mte1", "mte2", "mte3", "fixp")
TRAFFIC_KEYS = ("hbm_read_bytes", "hbm_write_bytes", "l2_read_bytes", "l2_write_bytes")


def unit_summary(ops: Iterable[OpRecord], cycles: int) -> dict[str, dict]:
    """Per pipe kind: busy_cycles (summed over instances), instances (pipes that ran >= 1 op),
    utilization = busy_cycles / (instances x cycles)."""
    busy: dict[str, int] = defaultdict(int)
    inst: dict[str, set] = defaultdict(set)
    for r in ops:
        key = r.pipe.lower()
        busy[key] += r.end - r.start
        inst[key].add((r.core, r.unit))
    out = {}
    for key in UNIT_KEYS:
        n = len(inst[key])
        out[key] = {"busy_cycles": busy[key], "instances": n,
                    "utilization": busy[key] / (n * cycles) if n and cycles else 0.0}
    return out


def traffic_summary(ops: Iterable[OpRecord], writebacks: Iterable[WritebackRecord]) -> dict:
    """GM bytes by level and direction, in total and by role.

    hbm_read: GM reads that missed L2 (or all GM reads with L2 off). l2_read: GM reads served by L2.
    l2_write: GM writes absorbed by L2. hbm_write: GM writes with L2 off, plus dirty L2 tiles written back
    (at eviction, or flushed at the end of the kernel).
    """
    by_role = {role.value: dict.fromkeys(TRAFFIC_KEYS, 0) for role in Role}
    for r in ops:
        if not r.level:
            continue
        direction = "read" if r.path.startswith("gm_") else "write"
        by_role[r.role][f"{r.level}_{direction}_bytes"] += r.nbytes
    for w in writebacks:
        by_role[w.role]["hbm_write_bytes"] += w.nbytes
    total = {k: sum(v[k] for v in by_role.values()) for k in TRAFFIC_KEYS}
    return {**total, "by_role": by_role}


def flops(ops: Iterable[OpRecord]) -> int:
    return 2 * sum(r.macs for r in ops)
