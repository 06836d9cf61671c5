"""npusim speed benchmarks: wall time, ops simulated, ops per second, peak memory.

Usage:  python benchmarks/run.py [--quick] [--only NAME ...] [-o benchmarks/results.json]

ops/s (sim) is graph ops / the simulate() wall time (validation + the simpy run + numerics when on); the
graph build is timed apart (build_s) and included in wall s. The scale_* cases give the least-squares
slope of wall time and peak RSS against ops. The 5M-op trace case writes a multi-GB trace to a temporary
folder (NPUSIM_BENCH_TMP, default the system's) and deletes it.

Each case runs in its own subprocess (so peak RSS is the case's own; with numerics on, simulate() forks a
child for the reference output, whose peak is reported apart as "child RSS MB": the two share the
inputs' pages copy-on-write, so their sum overstates the memory in use). NumPy/OpenBLAS threads are pinned
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
SCALE_SHAPES = ((512, 1024), (1024, 2048), (2048, 4096), (4096, 8192), (8192, 28672))  # 816 .. 166k ops
CASES = {
    "gemm_dequant_16x8192x28672_timing": ("dequant GEMM 16x8192x28672, 910b, timing only", "gemm",
                                          dict(m=16, k=8192, n=28672, method="dequant", weights="int8", numerics=False)),
    "simpy_baseline": ("bare simpy timeouts, as many as the dequant GEMM's ops", "simpy", {}),
    **{f"gemm_{meth}_16x4096x4096_numerics": (f"{meth} GEMM 16x4096x4096, 910b, numerics on", "gemm",
                                             dict(m=16, k=4096, n=4096, method=meth, weights=w, numerics=True))
       for meth, w in (("native", "bf16"), ("dequant", "int8"), ("msd", "int8"))},
    **{f"llama70b_{phase}_{meth}{'_numerics' if num else ''}": (
        f"Llama-3.1-70B {phase} GEMMs of one layer, {meth}, numerics {'on' if num else 'off'}", "workload_method",
        dict(workload="llama-3.1-70b", phase=phase, method=meth, numerics=num))
       for phase in ("decode_b16", "prefill_2048") for meth in ("native", "dequant", "msd")
       for num in ((False, True) if phase == "decode_b16" else (False,))},
    **{f"attention_gqa_b16_32k_{meth}{'_numerics' if num else ''}": (
        f"Llama-3.1-70B GQA decode attention, batch 16, 32k context, {meth}, numerics {'on' if num else 'off'}",
        "attention", dict(batch=16, q_heads=64, kv_heads=8, head_dim=128, kv_len=32768, method=meth, numerics=num))
       for meth in ("native", "dequant", "msd") for num in (False, True)},
    **{f"layer_llama70b_decode_b16_{meth}_numerics": (
        f"full Llama-3.1-70B decode layer (GEMMs + attention at 4k), batch 16, {meth}, numerics on", "step",
        dict(workload="llama-3.1-70b", phase="decode_b16", method=meth, layers=1, numerics=True, trace=False))
       for meth in ("dequant", "msd")},
    "compare_workload_llama70b_decode_b16": (
        "npusim compare --workload llama-3.1-70b --phase decode_b16 (whole 80-layer decode step, distinct "
        "shapes simulated once and multiplied)", "compare_workload", dict(workload="llama-3.1-70b", phase="decode_b16")),
    **{f"scale_dequant_16x{k}x{n}": (f"scaling: dequant GEMM 16x{k}x{n}, timing only", "gemm",
                                     dict(m=16, k=k, n=n, method="dequant", weights="int8", numerics=False))
       for k, n in SCALE_SHAPES},
    "step_llama70b_decode_b16_dequant_6_layers_trace": (
        "5M-op run with a trace: 6 Llama-3.1-70B decode layers, dequant, trace streamed to disk", "step",
        dict(workload="llama-3.1-70b", phase="decode_b16", method="dequant", layers=6, numerics=False, trace=True)),
}
QUICK = ("gemm_dequant_16x8192x28672_timing", "simpy_baseline", "gemm_native_16x4096x4096_numerics",
         "gemm_dequant_16x4096x4096_numerics", "gemm_msd_16x4096x4096_numerics",
         "layer_llama70b_decode_b16_dequant_numerics", "layer_llama70b_decode_b16_msd_numerics",
         "compare_workload_llama70b_decode_b16", *(f"scale_dequant_16x{k}x{n}" for k, n in SCALE_SHAPES))


def _run_case(name: str) -> dict:
    from npusim.config import load_config
    from npusim.kernels.gemm.quant import build_gemm
    from npusim.sim.gc_pause import gc_paused
    from npusim.sim.run import simulate
    desc, kind, a = CASES[name]
    cfg = load_config("910b")
    t0 = time.perf_counter()
    ops = 0
    extra: dict = {}
    if kind in ("gemm", "attention"):
        # as the CLI does it: the cyclic GC paused while the graph is built (simulate pauses it itself)
        with gc_paused():
            if kind == "gemm":
                g = build_gemm(cfg, a["m"], a["k"], a["n"], method=a["method"], weights=a["weights"])
            else:
                from npusim.kernels.attention.build import build_attention
                shape = {k: v for k, v in a.items() if k not in ("method", "numerics")}
                g = build_attention(cfg, kv="bf16" if a["method"] == "native" else "int8", method=a["method"],
                                    q_len=1, **shape)
        t_build = time.perf_counter() - t0
        res = simulate(g, cfg, numerics=a["numerics"])
        ops = len(g.ops)
        extra = {"cycles": res.cycles, "build_s": round(t_build, 3), "simulate_s": round(res.wall_s, 3),
                 "simulate_ops_per_s": round(ops / res.wall_s)}
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
    elif kind == "workload_method":
        from npusim.workloads.load import load_workload
        wl = load_workload(a["workload"])
        _, tokens = wl.tokens(a["phase"])
        weights = "bf16" if a["method"] == "native" else "int8"
        cycles, exact = 0, True
        for gs in wl.gemm:
            with gc_paused():
                g = build_gemm(cfg, gs.m_for(tokens), gs.k, gs.n, method=a["method"], weights=weights)
            res = simulate(g, cfg, numerics=a["numerics"])
            ops += len(g.ops)
            cycles += res.cycles
            exact = exact and (res.numerics is None or res.numerics.exact)
        extra = {"cycles_one_layer": cycles, **({"exact": exact} if a["numerics"] else {})}
    elif kind == "step":
        import tempfile
        from npusim.workloads.load import load_workload
        from npusim.workloads.step import run_step
        with gc_paused(), tempfile.TemporaryDirectory(dir=os.environ.get("NPUSIM_BENCH_TMP")) as tmp:
            trace = os.path.join(tmp, "step.json") if a["trace"] else None
            doc = run_step(cfg, load_workload(a["workload"]), a["phase"], a["method"], layers=a["layers"],
                           numerics=a["numerics"], trace=trace)
            ops = doc["ops"]
            extra = {"cycles": doc["cycles"], "kernels": doc["kernels_simulated"]}
            if trace:
                extra["trace_mb"] = round(os.path.getsize(trace) / 2**20, 1)
            if a["numerics"]:
                extra["exact"] = doc["exact"]
    else:
        from npusim.report.compare import run_workload_comparison
        from npusim.workloads.load import load_workload
        with gc_paused():
            res = run_workload_comparison(cfg, load_workload(a["workload"]), a["phase"])
        ops = None
        extra = {"distinct_gemms": res["distinct_gemms_simulated"],
                 "speedup_msd_vs_dequant": next(t["speedup_vs_dequant"] for t in res["totals"] if t["method"].startswith("msd"))}
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"case": name, "description": desc, "wall_s": round(wall, 3), "ops": ops,
            "ops_per_s": round(ops / wall) if ops else None, "peak_rss_mb": round(peak_mb, 1),
            "peak_child_rss_mb": round(child_mb, 1) if child_mb else None, **extra}


def scaling_fit(rows: list[dict]) -> dict | None:
    """Least-squares lines wall = a + b * ops and peak RSS = c + d * ops over the scaling cases."""
    import numpy as np
    pts = [r for r in rows if r["case"].startswith("scale_")]
    if len(pts) < 4:
        return None
    ops = np.array([r["ops"] for r in pts], dtype=float)
    out = {"sizes": len(pts), "ops_min": int(ops.min()), "ops_max": int(ops.max()),
           "span": round(float(ops.max() / ops.min()), 1)}
    for key, col, scale in (("wall_us_per_op", "wall_s", 1e6), ("rss_bytes_per_op", "peak_rss_mb", 2**20)):
        y = np.array([r[col] for r in pts], dtype=float) * scale
        slope, icpt = np.polyfit(ops, y, 1)
        pred = slope * ops + icpt
        r2 = 1 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
        out[key] = round(float(slope), 3)
        out[key.replace("_per_op", "_intercept")] = round(float(icpt), 1)
        out[f"r2_{col}"] = round(r2, 4)
    return out


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
    for col in ("case", "wall s", "simulate s", "ops", "ops/s (sim)", "of simpy", "peak RSS MB", "child RSS MB"):
        t.add_column(col, justify="left" if col == "case" else "right", no_wrap=col == "case")
    for r in rows:
        rate = r.get("simulate_ops_per_s") or r["ops_per_s"]
        frac = f"{rate / base['ops_per_s']:.3f}" if base and rate and r is not base else "-"
        t.add_row(r["case"], f"{r['wall_s']:.2f}", f"{r['simulate_s']:.2f}" if "simulate_s" in r else "-",
                  f"{r['ops']:,}" if r["ops"] else "-", f"{rate:,}" if rate else "-", frac, f"{r['peak_rss_mb']:.0f}",
                  f"{r['peak_child_rss_mb']:.0f}" if r.get("peak_child_rss_mb") else "-")
    Console(width=200).print(t)
    fit = scaling_fit(rows)
    if fit:
        Console().print(f"scaling over {fit['sizes']} sizes, {fit['ops_min']:,} to {fit['ops_max']:,} ops "
                        f"({fit['span']}x): wall {fit['wall_us_per_op']} µs/op (R² {fit['r2_wall_s']}), "
                        f"peak RSS {fit['rss_bytes_per_op']:.0f} B/op (R² {fit['r2_peak_rss_mb']})")
    doc = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version(), "blas_threads": 1},
           "results": rows, "scaling": fit}
    atomic_write_text(args.output, json.dumps(doc, indent=1) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
