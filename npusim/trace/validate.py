"""Pure-Python validation of a Chrome trace written by npusim (Perfetto's trace_processor is not
available offline). Returns a list of problems; an empty list means the trace is well-formed:

- top level: `traceEvents` list and `metadata` with `clock_hz` and `time_base`;
- every event has the keys its phase requires, with the right types;
- every (pid, tid) carrying X events has a thread_name, every pid a process_name;
- no two X events on one thread partially overlap;
- every flow id has exactly one `s` and one `f`, the `s` not after the `f`, each bound inside an X
  slice of its own thread.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

_REQUIRED = {
    "X": ("name", "ts", "dur", "pid", "tid"),
    "C": ("name", "ts", "pid", "args"),
    "s": ("id", "ts", "pid", "tid", "cat"),
    "f": ("id", "ts", "pid", "tid", "cat"),
    "M": ("name", "pid", "args"),
}


def _ns(us: float) -> int:
    # ts are cycles / 1000 written as decimals: back to integer cycles without float drift
    return round(us * 1000)


def validate_trace(doc: Any, max_problems: int = 20) -> list[str]:
    problems: list[str] = []

    def bad(msg: str) -> bool:
        problems.append(msg)
        return len(problems) >= max_problems

    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["top level must be an object with a traceEvents list"]
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or "clock_hz" not in meta or "time_base" not in meta:
        bad("metadata must carry clock_hz and time_base")
    threads_named, procs_named = set(), set()
    slices: dict[tuple, list[tuple[int, int, str]]] = defaultdict(list)
    flows: dict[Any, dict[str, list]] = defaultdict(lambda: {"s": [], "f": []})
    for i, ev in enumerate(doc["traceEvents"]):
        if not isinstance(ev, dict):
            if bad(f"event {i}: not an object"):
                return problems
            continue
        ph = ev.get("ph")
        req = _REQUIRED.get(ph)
        if req is None:
            if bad(f"event {i}: unknown phase {ph!r}"):
                return problems
            continue
        missing = [k for k in req if k not in ev]
        if missing:
            if bad(f"event {i} ({ph}): missing {', '.join(missing)}"):
                return problems
            continue
        if ph == "M":
            if ev["name"] == "thread_name":
                threads_named.add((ev["pid"], ev.get("tid")))
            elif ev["name"] == "process_name":
                procs_named.add(ev["pid"])
        elif ph == "X":
            if not isinstance(ev["dur"], (int, float)) or ev["dur"] < 0:
                if bad(f"event {i} {ev['name']!r}: bad dur {ev['dur']!r}"):
                    return problems
            start = _ns(ev["ts"])
            slices[(ev["pid"], ev["tid"])].append((start, start + _ns(ev["dur"]), ev["name"]))
        elif ph == "C":
            if not isinstance(ev["args"], dict) or not all(isinstance(v, (int, float)) for v in ev["args"].values()):
                if bad(f"event {i} counter {ev['name']!r}: args must be numbers"):
                    return problems
        else:
            flows[(ev["cat"], ev["id"])][ph].append(ev)

    for pid, tid in slices:
        if (pid, tid) not in threads_named and bad(f"thread pid={pid} tid={tid} has no thread_name"):
            return problems
        if pid not in procs_named and bad(f"process pid={pid} has no process_name"):
            return problems
    for key, evs in slices.items():
        evs.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(evs, evs[1:]):
            if b0 < a1 and b1 > a1:
                if bad(f"thread {key}: {an!r} [{a0}, {a1}) and {bn!r} [{b0}, {b1}) partially overlap"):
                    return problems
    starts = {k: [s for s, _, _ in v] for k, v in slices.items()}

    def inside(ev) -> bool:
        key = (ev["pid"], ev["tid"])
        t = _ns(ev["ts"])
        j = bisect.bisect_right(starts.get(key, []), t) - 1
        if j < 0:
            return False
        s, e, _ = slices[key][j]
        return s <= t <= e

    for (cat, fid), ends in flows.items():
        if len(ends["s"]) != 1 or len(ends["f"]) != 1:
            if bad(f"flow {cat}/{fid}: {len(ends['s'])} starts and {len(ends['f'])} ends (want 1 and 1)"):
                return problems
            continue
        s, f = ends["s"][0], ends["f"][0]
        if _ns(s["ts"]) > _ns(f["ts"]):
            if bad(f"flow {cat}/{fid}: starts after it ends"):
                return problems
        for end in (s, f):
            if not inside(end) and bad(f"flow {cat}/{fid}: {end['ph']} at ts={end['ts']} is not inside a slice "
                                       f"of pid={end['pid']} tid={end['tid']}"):
                return problems
    return problems
