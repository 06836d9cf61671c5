"""Reading a trace back: the op records, write-backs and config of the run that wrote it.

Reports that are functions of records (metrics, attribution) therefore give the same numbers from a
trace file as from the live run, on any machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.hw.records import OpRecord, WritebackRecord
from npusim.trace.validate import validate_trace


def _unit_of_pid(pid: int) -> tuple[int, str]:
    core, rest = divmod(pid - 2, 8)
    return core, "aic" if rest == 0 else f"aiv{rest - 1}"


def load_trace(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NpusimError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NpusimError(f"{p}: not a readable JSON trace ({exc})") from None
    problems = validate_trace(doc, max_problems=3)
    if problems:
        raise NpusimError(f"{p}: not a valid npusim trace: " + "; ".join(problems))
    if "config" not in doc["metadata"] or "makespan_cycles" not in doc["metadata"]:
        raise NpusimError(f"{p}: trace metadata lacks the run's config (was it written by npusim?)")
    return doc


def trace_config(doc: dict[str, Any]) -> HardwareConfig:
    try:
        return HardwareConfig.model_validate(doc["metadata"]["config"])
    except ValidationError as exc:
        raise NpusimError(f"trace metadata holds an invalid config: {exc.errors()[0]['msg']}") from None


def trace_records(doc: dict[str, Any]) -> tuple[list[OpRecord], list[WritebackRecord]]:
    """Op records (in file order = completion order) and write-backs from a trace document."""
    thread_names = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"]
                    if e.get("ph") == "M" and e.get("name") == "thread_name"}
    records = []
    for e in doc["traceEvents"]:
        if e.get("ph") != "X":
            continue
        a = e["args"]
        core, unit = _unit_of_pid(e["pid"])
        start = round(e["ts"] * 1000)
        records.append(OpRecord(
            index=a["op"], name=e["name"], core=core, unit=unit, pipe=thread_names[(e["pid"], e["tid"])],
            kind=a["kind"], start=start, end=start + round(e["dur"] * 1000), ready=a["ready"],
            pipe_free=a["pipe_free"], blocker=a.get("waited_on", -1),
            blocker_is_slot=a.get("waited_on_slot", False), latency=a.get("flag_cycles", 0),
            path=a.get("path", ""), nbytes=a.get("bytes", 0), role=a.get("role", ""), level=a.get("level", ""),
            macs=a.get("macs", 0), dtype=a.get("dtype", ""), vop=a.get("vop", ""), elements=a.get("elements", 0)))
    writebacks = [WritebackRecord(c, n, r, cause) for c, n, r, cause in doc["metadata"].get("writebacks", [])]
    return records, writebacks
