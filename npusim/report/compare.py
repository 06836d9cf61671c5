"""Methods side by side: one run per method on the same shape, and workload totals over a layer's GEMMs.

Definitions (docs/metrics.md): speedup = dequant cycles / method cycles; vector-side cycles as in
npusim.report.attribution.vector_side; vector busy = VECTOR-pipe busy cycles summed over every AIV;
partial bytes = GM bytes of int32 partial sums written (into L2, or HBM with L2 off) and read back.
"""

from __future__ import annotations

from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.kernels.attention.build import build_attention
from npusim.kernels.gemm.quant import build_gemm
from npusim.report.attribution import vector_side
from npusim.report.run_report import run_json
from npusim.sim.run import simulate
from npusim.units import format_bytes
from npusim.workloads.load import Workload


def gemm_methods(cfg: HardwareConfig, weights: str, passes: int) -> list[dict[str, Any]]:
    """The (method, weights, passes) runs a comparison makes on this preset."""
    runs = [{"method": "native", "weights": "bf16"}, {"method": "dequant", "weights": weights}]
    mx_cube = cfg.cube.mx_block_elements is not None and "mxfp4" in cfg.cube.k0
    if weights == "int8":
        runs.append({"method": "msd", "weights": "int8", "passes": passes})
    elif weights == "mxfp4" and mx_cube:
        runs += [{"method": "msd", "weights": "mxfp4", "passes": passes}, {"method": "direct", "weights": "mxfp4"}]
    elif weights not in ("int8-g128", "mxfp4"):
        raise NpusimError(f"compare: --weights {weights!r}: choose int8, int8-g128 or mxfp4")
    return runs


def compare_fields(doc: dict[str, Any], baseline_cycles: int | None) -> dict[str, Any]:
    cube = doc["units"]["cube"]
    return {
        "method": doc["meta"]["method"] + (f"-{doc['meta']['passes']}" if doc["meta"]["method"] == "msd" else ""),
        "weights": doc["meta"]["weights"],
        "cycles": doc["cycles"],
        "time_us": doc["time_us"],
        "speedup_vs_dequant": baseline_cycles / doc["cycles"] if baseline_cycles else None,
        "cube_utilization": cube["utilization"],
        "cube_wait_vector_side_cycles": vector_side(cube["waiting_on"]),
        "critical_path_vector_side": vector_side(doc["critical_path"]) / doc["cycles"],
        "hbm_bytes": doc["traffic"]["hbm_read_bytes"] + doc["traffic"]["hbm_write_bytes"],
        "rel_l2_vs_fp64": None if doc["numerics"] is None else doc["numerics"]["rel_l2_vs_fp64"],
        "exact": None if doc["numerics"] is None else doc["numerics"]["exact"],
        "vector_busy_cycles": doc["units"]["vector"]["busy_cycles"],
        "partial_bytes": partial_bytes(doc),
    }


def partial_bytes(doc: dict[str, Any]) -> int:
    """GM bytes of int32 partial sums: written (a tile write lands in L2, or in HBM with L2 off; a later
    write-back of the same bytes is not counted again) plus read back (from L2 or HBM)."""
    p = doc["traffic"]["by_role"].get("partial")
    if not p:
        return 0
    return (p["l2_write_bytes"] or p["hbm_write_bytes"]) + p["l2_read_bytes"] + p["hbm_read_bytes"]


def run_gemm_comparison(cfg: HardwareConfig, m: int, k: int, n: int, *, weights: str = "int8", passes: int = 2,
                        cores: int | None = None, seed: int = 0, numerics: bool = True,
                        progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    docs = []
    for run in gemm_methods(cfg, weights, passes):
        if progress:
            progress(f"{run['method']} {run['weights']} {m}x{k}x{n}")
        g = build_gemm(cfg, m, k, n, cores, **run)
        docs.append(run_json(simulate(g, cfg, seed=seed, numerics=numerics)))
    base = next((d["cycles"] for d in docs if d["meta"]["method"] == "dequant"), None)
    for d in docs:
        d["compare"] = compare_fields(d, base)
    return docs


def attention_fields(doc: dict[str, Any], baseline_cycles: int | None) -> dict[str, Any]:
    """compare_fields plus the KV-caused HBM bytes (kv_cache + workspace roles, read + written)."""
    row = compare_fields(doc, baseline_cycles)
    br = doc["traffic"]["by_role"]
    row["kv_hbm_bytes"] = sum(br[r]["hbm_read_bytes"] + br[r]["hbm_write_bytes"] for r in ("kv_cache", "workspace"))
    row["weights"] = doc["meta"]["kv"]
    return row


def run_attention_comparison(cfg: HardwareConfig, shape: dict[str, Any], *, passes: int = 2, seed: int = 0,
                             numerics: bool = True) -> list[dict[str, Any]]:
    docs = []
    for method in ("native", "dequant", "msd"):
        g = build_attention(cfg, kv="bf16" if method == "native" else "int8", method=method, passes=passes, **shape)
        docs.append(run_json(simulate(g, cfg, seed=seed, numerics=numerics)))
    base = next(d["cycles"] for d in docs if d["meta"]["method"] == "dequant")
    for d in docs:
        d["compare"] = attention_fields(d, base)
    return docs


def render_comparison(docs: list[dict[str, Any]], console: Console, title: str) -> None:
    gemm = all(d["kernel"] == "gemm" for d in docs)
    cols = ["method", "cycles", "vs deq", "Cube", "Cube⇠AIV", "AIV crit", "HBM"]
    cols += ["Vector", "partials"] if gemm else []
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in cols + ["rel err"]:
        t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for d in docs:
        c = d["compare"]
        extra = [_compact(c["vector_busy_cycles"]), format_bytes(c["partial_bytes"])] if gemm else []
        t.add_row(f"{c['method']} {c['weights']}", f"{c['cycles']:,}",
                  "-" if c["speedup_vs_dequant"] is None else f"{c['speedup_vs_dequant']:.2f}x",
                  f"{100 * c['cube_utilization']:.0f}%", f"{c['cube_wait_vector_side_cycles']:,}",
                  f"{100 * c['critical_path_vector_side']:.0f}%", format_bytes(c["hbm_bytes"]), *extra,
                  "-" if c["rel_l2_vs_fp64"] is None else f"{c['rel_l2_vs_fp64']:.1e}")
    # never squeeze the columns into a narrow (or piped, 80-column) console: print at the table's width
    wide = Measurement.get(console, console.options.update(max_width=1000), t).maximum
    out = console if wide <= console.width else Console(file=console.file, width=wide, no_color=console.no_color,
                                                        force_terminal=console.is_terminal,
                                                        color_system=console.color_system)
    out.print(t)
    console.print(_LEGEND + (_LEGEND_GEMM if gemm else ""), style="dim", soft_wrap=True)


def _compact(v: int) -> str:
    """1,234 -> 1.2k, 31,940,000 -> 31.9M (3 significant figures at most)."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            x = v / div
            return f"{x:.3g}{unit}"
    return str(v)


_LEGEND = ("vs deq: speedup over dequant. Cube: Cube utilization. Cube⇠AIV: Cube idle cycles (all cores)\n"
           "  waiting on AIV work or workspace transfers. AIV crit: their share of the critical path.\n"
           "  HBM: bytes read + written. rel err: relative L2 error vs FP64 (with numerics).")
_LEGEND_GEMM = ("\n  Vector: VECTOR-pipe busy cycles, summed over all AIVs. partials: GM bytes of int32 partial\n"
                "  sums written and read back (MSD).")


def run_workload_comparison(cfg: HardwareConfig, wl: Workload, phase: str | None, *, weights: str = "int8",
                            passes: int = 2, seed: int = 0, numerics: bool = False, context: int | None = None,
                            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every GEMM of the workload once per method; totals weight each by count x layers that have it.

    Identical GEMMs (same m, k, n) are simulated once and multiplied: the simulation is deterministic, so
    a repeat would give the same cycles."""
    phase, tokens = wl.tokens(phase)
    cache: dict[tuple, list[dict]] = {}
    gemms = []
    for gs in wl.gemm:
        m = gs.m_for(tokens)
        key = (m, gs.k, gs.n)
        if key not in cache:
            cache[key] = run_gemm_comparison(cfg, m, gs.k, gs.n, weights=weights, passes=passes, seed=seed,
                                             numerics=numerics, progress=progress)
        weight = gs.count * (gs.layers or wl.workload.layers)
        gemms.append({"name": gs.name, "m": m, "k": gs.k, "n": gs.n, "count": gs.count,
                      "layers": gs.layers or wl.workload.layers, "rows": [d["compare"] for d in cache[key]],
                      "weight": weight})
    attention = []
    for at in wl.attention:
        if tokens > 256:
            continue  # a prefill phase: attention chunks of > 256 queries are not modelled
        ctx = context or at.contexts[0]
        shape = {"batch": tokens, "q_heads": at.q_heads, "kv_heads": at.kv_heads, "q_len": 1, "kv_len": ctx,
                 "head_dim": at.head_dim, "rope_dim": at.rope_dim, "latent": at.latent, "block": None, "cores": None}
        if progress:
            progress(f"attention {at.name} batch {tokens} context {ctx}")
        docs = run_attention_comparison(cfg, shape, passes=passes, seed=seed, numerics=numerics)
        layers = at.layers or wl.workload.layers
        attention.append({"name": at.name, "batch": tokens, "context": ctx, "count": 1, "layers": layers,
                          "rows": [d["compare"] for d in docs], "weight": layers})
    totals: dict[str, dict[str, Any]] = {}
    for gm in gemms + attention:
        for row in gm["rows"]:
            add_to_totals(totals, row, gm["weight"])
    return {"workload": wl.workload.name, "source": wl.workload.source, "phase": phase, "tokens": tokens,
            "hw": cfg.meta.name, "layers": wl.workload.layers, "distinct_gemms_simulated": len(cache),
            "gemms": gemms, "attention": attention, "totals": finish_totals(totals, cfg)}


TOTAL_KEYS = ("cycles", "hbm_bytes", "cube_wait_vector_side_cycles")


def add_to_totals(totals: dict[str, dict[str, Any]], row: dict[str, Any], weight: int = 1) -> None:
    """Add `weight` x a comparison row to its method's totals."""
    tot = totals.setdefault(row["method"], {"method": row["method"], "weights": row["weights"],
                                            **dict.fromkeys(TOTAL_KEYS, 0)})
    for key in TOTAL_KEYS:
        tot[key] += weight * row[key]


def finish_totals(totals: dict[str, dict[str, Any]], cfg: HardwareConfig) -> list[dict[str, Any]]:
    """The per-method totals with their time and speedup over dequant."""
    base = totals.get("dequant", {}).get("cycles")
    for tot in totals.values():
        tot["time_us"] = tot["cycles"] / cfg.chip.clock_hz * 1e6
        tot["speedup_vs_dequant"] = base / tot["cycles"] if base else None
    return list(totals.values())


def render_workload(res: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{res['workload']}[/], phase {res['phase']} ({res['tokens']} tokens), on {res['hw']}: "
                  f"{len(res['gemms'])} GEMM kinds, {res['distinct_gemms_simulated']} distinct shapes simulated "
                  f"once per method and multiplied by count x layers ({res['layers']} layers)")
    methods = [r["method"] for r in res["gemms"][0]["rows"]]
    t = Table(title="cycles per GEMM (one instance)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("gemm", "M x K x N", "x", *methods):
        t.add_column(col, justify="left" if col == "gemm" else "right", no_wrap=True)
    for gm in res["gemms"]:
        t.add_row(gm["name"], f"{gm['m']}x{gm['k']}x{gm['n']}", f"{gm['count'] * gm['layers']}",
                  *(f"{r['cycles']:,}" for r in gm["rows"]))
    console.print(t)
    for at in res["attention"]:
        console.print(f"attention {at['name']}, batch {at['batch']}, context {at['context']:,}: "
                      + ", ".join(f"{r['method']} {r['cycles']:,}" for r in at["rows"]) + " cycles per layer")
    what = "all GEMMs and attention" if res["attention"] else "all GEMMs"
    console.print(totals_table(res["totals"], f"whole model, {what} (one forward step)"))


def totals_table(totals: list[dict[str, Any]], title: str) -> Table:
    """Per-method totals of a workload comparison (multiplied or layer by layer)."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
              collapse_padding=True)
    for col in ("method", "W", "cycles", "ms", "vs deq", "Cube⇠AIV", "HBM"):
        t.add_column(col, justify="left" if col in ("method", "W") else "right", no_wrap=True)
    for tot in totals:
        t.add_row(tot["method"], tot["weights"], f"{tot['cycles']:,}", f"{tot['time_us'] / 1000:.3f}",
                  "-" if tot["speedup_vs_dequant"] is None else f"{tot['speedup_vs_dequant']:.2f}x",
                  f"{tot['cube_wait_vector_side_cycles']:,}", format_bytes(tot["hbm_bytes"]))
    return t
