"""npusim speed benchmarks: wall time, ops simulated, ops per second, peak memory.

Usage:  python benchmarks/run.py [--quick] [--only NAME ...] [-o benchmarks/results.json]

Each case runs in its own subprocess (so peak RSS is the case's own). NumPy/OpenBLAS threads are pinned
to 1 (OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1): on a shared 2-core machine threaded BLAS
makes small matmuls erratic, and npusim's bit-exact numerics barely use BLAS anyway.
The `simpy_baseline` case times the same number of bare simpy timeouts as the dequant GEMM case, so the
table can show npusim's ops per second as a fraction of the engine's own limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _v in THREAD_VARS:
    os.environ.setdefault(_v, "1")

# name -> (description, kind, args); kinds are run by `_run_case`
CASES = {
    "gemm_dequant_16x8192x28672_timing": ("dequant GEMM 16x8192x28672, 910b, timing only", "gemm",
                                          dict(m=16, k=8192, n=28672, method="dequant", weights="int8", numerics=False)),
    "simpy_baseline": ("bare simpy timeouts, as many as the dequant GEMM's ops", "simpy", {}),
    **{f"gemm_{meth}_16x4096x4096_numerics": (f"{meth} GEMM 16x4096x4096, 910b, numerics on", "gemm",
                                             dict(m=16, k=4096, n=4096, method=meth, weights=w, numerics=True))
       for meth, w in (("native", "bf16"), ("dequant", "int8"), ("msd", "int8"))},
    **{f"llama70b_{phase}_{meth}": (f"Llama-3.1-70B {phase} GEMMs, {meth}, timing only", "workload_method",
                                    dict(workload="llama-3.1-70b", phase=phase, method=meth))
       for phase in ("decode_b16", "prefill_2048") for meth in ("native", "dequant", "msd")},
    "compare_workload_llama70b_decode_b16": ("npusim compare --workload llama-3.1-70b --phase decode_b16",
                                             "compare_workload", dict(workload="llama-3.1-70b", phase="decode_b16")),
}
QUICK = ("gemm_dequant_16x8192x28672_timing", "simpy_baseline", "gemm_native_16x4096x4096_numerics",
         "gemm_dequant_16x4096x4096_numerics", "gemm_msd_16x4096x4096_numerics",
         "compare_workload_llama70b_decode_b16")


def _run_case(name: str) -> dict:
    from npusim.config import load_config
    from npusim.kernels.gemm.quant import build_gemm
    from npusim.sim.run import simulate
    desc, kind, a = CASES[name]
    cfg = load_config("910b")
    t0 = time.perf_counter()
    ops = 0
    if kind == "gemm":
        g = build_gemm(cfg, a["m"], a["k"], a["n"], method=a["method"], weights=a["weights"])
        t_build = time.perf_counter() - t0
        res = simulate(g, cfg, numerics=a["numerics"])
        ops = len(g.ops)
        extra = {"cycles": res.cycles, "build_s": round(t_build, 3), "simulate_s": round(res.wall_s, 3)}
        if a["numerics"]:
            extra["exact"] = res.numerics.exact
    elif kind == "simpy":
        import simpy
        n = _dequant_ops()
        env = simpy.Environment()

        def proc():
            for _ in range(n):
                yield env.timeout(1)
        env.process(proc())
        t0 = time.perf_counter()
        env.run()
        ops = n
        extra = {}
    elif kind == "workload_method":
        from npusim.workloads.load import load_workload
        wl = load_workload(a["workload"])
        _, tokens = wl.tokens(a["phase"])
        weights = "bf16" if a["method"] == "native" else "int8"
        cycles = 0
        for gs in wl.gemm:
            g = build_gemm(cfg, gs.m_for(tokens), gs.k, gs.n, method=a["method"], weights=weights)
            res = simulate(g, cfg, numerics=False)
            ops += len(g.ops)
            cycles += res.cycles
        extra = {"cycles_one_layer": cycles}
    else:
        from npusim.report.compare import run_workload_comparison
        from npusim.workloads.load import load_workload
        res = run_workload_comparison(cfg, load_workload(a["workload"]), a["phase"])
        extra = {"distinct_gemms": res["distinct_gemms_simulated"],
                 "speedup_msd_vs_dequant": next(t["speedup_vs_dequant"] for t in res["totals"] if t["method"].startswith("msd"))}
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": name, "description": desc, "wall_s": round(wall, 3), "ops": ops,
            "ops_per_s": round(ops / wall) if ops else None, "peak_rss_mb": round(peak_mb, 1), **extra}


def _dequant_ops() -> int:
    from npusim.config import load_config
    from npusim.kernels.gemm.quant import build_gemm
    a = CASES["gemm_dequant_16x8192x28672_timing"][2]
    return len(build_gemm(load_config("910b"), a["m"], a["k"], a["n"], method="dequant", weights="int8").ops)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the cases behind the README's headline figures")
    ap.add_argument("--only", nargs="*", help=f"case names (of: {', '.join(CASES)})")
    ap.add_argument("-o", "--output", default="benchmarks/results.json", help="JSON results file")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case)))
        return 0
    names = args.only or (list(QUICK) if args.quick else list(CASES))
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"error: unknown case(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table
    from npusim.io import atomic_write_text
    rows = []
    for name in names:
        Console(stderr=True).print(f"[dim]running {name} ...[/]")
        p = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True)
        if p.returncode:
            print(p.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(p.stdout))
    base = next((r for r in rows if r["case"] == "simpy_baseline"), None)
    t = Table(title=f"npusim benchmarks ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                    f"Python {platform.python_version()}, BLAS threads 1)")
    for col in ("case", "wall s", "ops", "ops/s", "of simpy", "peak RSS MB"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for r in rows:
        frac = f"{r['ops_per_s'] / base['ops_per_s']:.2f}" if base and r["ops_per_s"] and r is not base else "-"
        t.add_row(r["case"], f"{r['wall_s']:.2f}", f"{r['ops']:,}", f"{r['ops_per_s'] or 0:,}", frac,
                  f"{r['peak_rss_mb']:.0f}")
    Console().print(t)
    doc = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version(), "blas_threads": 1},
           "results": rows}
    atomic_write_text(args.output, json.dumps(doc, indent=1) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
