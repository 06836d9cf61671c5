"""The full `npusim verify` grid of one preset, resumable: hours of simulation on a 2-core machine.

Usage:  python benchmarks/verify_grid.py --hw 910b [--cache benchmarks/verify_910b.sims.jsonl]
                                         [-o benchmarks/verify_910b.json] [--report-only]

Each grid point is simulated once (timing only, `verify.sim_point`) and the part of its run JSON the
comparison reads (cycles, traffic, critical path, plan meta) is appended to the cache as one line, so an
interrupted run continues where it stopped. The rows are then made from the cached simulations and the
current closed-form models (`verify.point_row`, the same function `npusim verify` uses) and written
atomically to the output with the summary and the commit. --report-only skips simulating and writes the
rows of the points cached so far (a partial grid says so in its summary).

A cached simulation belongs to the builders and simulator it ran with: delete the cache after changing
either. The models may change freely; --report-only recomputes every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from npusim.config import load_config
from npusim.errors import NpusimError
from npusim.io import atomic_write_text
from npusim.model.verify import STEADY_TILES, grid, point_row, sim_point, summarize

DOC_KEYS = ("cycles", "traffic", "critical_path", "meta")


def _key(p) -> str:
    return f"{p.kernel}|{p.method}|{p.hw}|{p.shape}"


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hw", default="910b", help="preset name (default 910b)")
    ap.add_argument("--cache", help="simulations so far, one JSON line per point (default "
                                    "benchmarks/verify_<hw>.sims.jsonl)")
    ap.add_argument("-o", "--out", help="rows and summary (default benchmarks/verify_<hw>.json)")
    ap.add_argument("--report-only", action="store_true", help="do not simulate; report the cached points")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    cache = args.cache or os.path.join(here, f"verify_{args.hw}.sims.jsonl")
    out = args.out or os.path.join(here, f"verify_{args.hw}.json")
    try:
        cfg = load_config(args.hw)
    except NpusimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    points = grid([args.hw])
    sims: dict[str, dict] = {}
    if os.path.exists(cache):
        with open(cache) as fh:
            for line in fh:
                if line.strip():
                    d = json.loads(line)
                    sims[d["key"]] = d
    if not args.report_only:
        for i, p in enumerate(points):
            if _key(p) in sims:
                continue
            t0 = time.perf_counter()
            try:
                doc = sim_point(p, cfg)
                rec = {k: doc[k] for k in DOC_KEYS}
            except NpusimError as exc:
                rec = {"error": str(exc)}
            rec.update(key=_key(p), wall_s=round(time.perf_counter() - t0, 2))
            with open(cache, "a") as fh:  # one line per point: a crash loses at most the point running
                fh.write(json.dumps(rec) + "\n")
            sims[rec["key"]] = rec
            print(f"[{i + 1}/{len(points)}] {p.kernel} {p.method} {p.shape}: "
                  f"{rec.get('cycles', 'error')} cycles, {rec['wall_s']} s", flush=True)
    rows, errors = [], []
    for p in points:
        d = sims.get(_key(p))
        if d is None:
            continue
        if "error" in d:
            errors.append({"kernel": p.kernel, "method": p.method, "hw": p.hw, "shape": p.shape, "error": d["error"]})
        else:
            rows.append(point_row(p, cfg, d))
    summary = {**summarize(rows), "grid_points": len(points), "refused": len(errors),
               "complete": len(rows) + len(errors) == len(points),
               "sim_wall_s": round(sum(d.get("wall_s", 0) for d in sims.values()), 1)}
    outside = [r for r in rows if not r["within_tolerance"]]
    atomic_write_text(out, json.dumps({"hw": args.hw, "commit": _commit(), "summary": summary,
                                       "rows": rows, "refused": errors}, indent=1, default=str) + "\n")
    print(json.dumps(summary))
    print(f"{len(outside)} points outside 10 % ({sum(r['tiles_per_core'] >= STEADY_TILES for r in outside)} "
          f"with >= {STEADY_TILES} tiles per core); rows written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
