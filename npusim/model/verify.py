"""`npusim verify` and `npusim crossover`: the simulation checked against the closed-form models.

The grid is defined once here (GRID_M, grid_shapes, ATTN_SHAPES, ATTN_CONTEXTS, grid); a row runs one
point timing-only in the simulator and in the model and compares cycles, the binding resource and GM
traffic by role. The full grid has every GEMM method over the workloads' shapes and attention decode
(GQA and MLA, every method) at 4k and 32k context; --quick has GEMMs only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from npusim.config import load_config
from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.kernels.attention.build import build_attention
from npusim.kernels.gemm.quant import build_gemm
from npusim.model.attention import model_attention
from npusim.model.base import GROUPS, grouped, leader
from npusim.model.gemm import model_gemm, model_msd
from npusim.report.run_report import run_json
from npusim.sim.run import simulate

GRID_M = (1, 4, 16, 64, 256, 1024, 4096)
GEMM_METHODS = (("native", "bf16"), ("dequant", "int8"), ("msd", "int8"))
PRESETS = ("910b", "950")
QUICK_M = (1, 16, 256)
QUICK_SHAPES = ((4096, 4096), (512, 32768))
TOLERANCE = 0.10          # |sim / model - 1| allowed where the steady state is long enough
STEADY_TILES = 8          # ... i.e. at least this many output tiles (attention: KV blocks) on the binding core
OPTIONAL_PLAN_KEYS = ("cores_per_column_range",)  # recorded where above 1 (quant.share_meta)
# attention decode points: Llama-3.1-70B GQA and DeepSeek-V3 MLA heads (the shipped workloads' attention)
ATTN_SHAPES = {
    "gqa": {"batch": 1, "q_heads": 64, "kv_heads": 8, "head_dim": 128},
    "mla": {"batch": 1, "q_heads": 128, "kv_heads": 1, "head_dim": 512, "rope_dim": 64, "latent": True},
}
ATTN_CONTEXTS = (4096, 32768)
ATTN_METHODS = ("native", "dequant", "msd")


def grid_shapes() -> list[tuple[int, int]]:
    """Distinct (K, N) of every GEMM in the shipped workloads, sorted."""
    from npusim.workloads.load import load_workload, workload_paths
    shapes = set()
    for name in workload_paths():
        for gm in load_workload(name).gemm:
            shapes.add((gm.k, gm.n))
    return sorted(shapes)


@dataclass(frozen=True)
class Point:
    kernel: str
    method: str
    weights: str
    hw: str
    m: int
    k: int
    n: int
    passes: int = 2

    @property
    def shape(self) -> str:
        return f"{self.m}x{self.k}x{self.n}"


@dataclass(frozen=True)
class AttnPoint:
    """One attention decode point: `model` names an ATTN_SHAPES entry, kv_len the context."""
    kernel: str
    method: str
    hw: str
    model: str
    kv_len: int
    q_len: int = 1
    passes: int = 2

    @property
    def weights(self) -> str:
        return "bf16" if self.method == "native" else "int8"

    @property
    def shape(self) -> str:
        return f"{self.model} q{self.q_len} kv{self.kv_len}"

    def kwargs(self) -> dict:
        return {**ATTN_SHAPES[self.model], "q_len": self.q_len, "kv_len": self.kv_len, "passes": self.passes}


def attention_grid(hws: Iterable[str] = PRESETS) -> list[AttnPoint]:
    """Attention decode: every method, GQA and MLA, ATTN_CONTEXTS."""
    return [AttnPoint("attention", meth, hw, model, kv) for hw in hws for model in ATTN_SHAPES
            for kv in ATTN_CONTEXTS for meth in ATTN_METHODS]


def grid(hws: Iterable[str] = PRESETS, quick: bool = False) -> list:
    """The verify grid: every GEMM method, M in GRID_M, (K, N) from the workloads, then the attention
    decode points (attention_grid); --quick: QUICK_M x QUICK_SHAPES GEMMs only."""
    hws = list(hws)
    ms = QUICK_M if quick else GRID_M
    shapes = QUICK_SHAPES if quick else grid_shapes()
    gemms = [Point("gemm", meth, w, hw, m, k, n) for hw in hws for (k, n) in shapes for m in ms
             for meth, w in GEMM_METHODS]
    return gemms if quick else gemms + attention_grid(hws)


def sim_gemm(cfg: HardwareConfig, p: Point) -> dict:
    g = build_gemm(cfg, p.m, p.k, p.n, None, method=p.method, weights=p.weights, passes=p.passes)
    doc = run_json(simulate(g, cfg, numerics=False))
    return doc


def sim_traffic(doc: dict, l2_enabled: bool) -> dict[str, dict[str, int]]:
    """Per role: GM bytes read (HBM + L2 hits), written (into L2, or into HBM with L2 off), HBM reads/writes."""
    out = {}
    for role, v in doc["traffic"]["by_role"].items():
        rd = v["hbm_read_bytes"] + v["l2_read_bytes"]
        wr = v["l2_write_bytes"] if l2_enabled else v["hbm_write_bytes"]
        if rd or wr:
            out[role] = {"read_bytes": rd, "write_bytes": wr, "hbm_read_bytes": v["hbm_read_bytes"],
                         "hbm_write_bytes": v["hbm_write_bytes"]}
    return out


def check_traffic(sim: dict, model: dict) -> list[str]:
    """Mismatches between simulated and modelled traffic: bytes per role exactly, HBM bytes in range."""
    bad = []
    for role in sorted(set(sim) | set(model)):
        s, mo = sim.get(role), model.get(role)
        if s is None or mo is None:
            bad.append(f"{role}: sim {s} model {mo}")
            continue
        for key in ("read_bytes", "write_bytes"):
            if s[key] != mo[key]:
                bad.append(f"{role} {key}: sim {s[key]} model {mo[key]}")
        for key in ("hbm_read_bytes", "hbm_write_bytes"):
            lo, hi = mo[key]
            if not lo <= s[key] <= hi:
                bad.append(f"{role} {key}: sim {s[key]} outside model range [{lo}, {hi}]")
    return bad


def _plan_keys(plan: dict, meta: dict) -> list[str]:
    """The plan keys to compare: the model's, and the ones a run records only where they apply."""
    return list(plan) + [k for k in OPTIONAL_PLAN_KEYS if k in meta and k not in plan]


def _compare(p, cfg: HardwareConfig, doc: dict, mod, shape_fields: dict, meta: dict, tiles_per_core: int) -> dict:
    """The row of one grid point: simulated run JSON `doc` against model result `mod`."""
    sim_tr = sim_traffic(doc, cfg.l2.enabled)
    bad = check_traffic(sim_tr, mod.traffic)
    ratio = doc["cycles"] / mod.cycles if mod.cycles else float("inf")
    sim_groups = grouped(doc["critical_path"])
    sim_leader = leader(sim_groups)
    return {
        "kernel": p.kernel, "method": p.method, "hw": cfg.meta.name, "shape": p.shape, **shape_fields,
        "passes": p.passes if p.method == "msd" else None,
        "sim_cycles": doc["cycles"], "model_cycles": mod.cycles, "ratio": round(ratio, 4),
        "model_bound": mod.bound, "model_bound_stage": mod.bound_stage, "sim_leader": sim_leader,
        "sim_critical_path": sim_groups, "model_attribution": mod.attribution,
        "sim_hbm_bytes": doc["traffic"]["hbm_read_bytes"] + doc["traffic"]["hbm_write_bytes"],
        "model_hbm_bytes": mod.hbm_bytes_expected,
        "sim_gm_bytes": sum(v["read_bytes"] + v["write_bytes"] for v in sim_tr.values()),
        "model_gm_bytes": mod.read_bytes + mod.write_bytes,
        "traffic_ok": not bad, "traffic_mismatches": bad,
        "tiles_per_core": tiles_per_core, "steady_items": mod.steady_items,
        "within_tolerance": abs(ratio - 1) <= TOLERANCE, "bound_agrees": mod.bound == sim_leader,
        "meta": meta,
        # the model's plan choices must be the builder's (drift shows up here first)
        "plan_mismatches": {k: (doc["meta"].get(k), mod.plan.get(k)) for k in _plan_keys(mod.plan, doc["meta"])
                            if doc["meta"].get(k) != mod.plan.get(k)},
        "note": None,
    }


def sim_point(p, cfg: HardwareConfig) -> dict:
    """The simulated side of a grid point: the run JSON (timing only) of its kernel."""
    if p.kernel == "attention":
        return run_json(simulate(build_attention(cfg, method=p.method, **p.kwargs()), cfg, numerics=False))
    return sim_gemm(cfg, p)


def attention_row(p: AttnPoint, cfg: HardwareConfig, doc: dict) -> dict:
    """An attention point's row: its simulated run JSON `doc` against the model, as gemm_row compares GEMMs."""
    kw = p.kwargs()
    mod = model_attention(cfg, method=p.method, **kw)
    row = _compare(p, cfg, doc, mod, {"m": p.q_len, "k": None, "n": None, "kv_len": p.kv_len, "model": p.model},
                   {k: doc["meta"].get(k) for k in mod.plan}, mod.steady_items)  # KV blocks stand for tiles
    row["note"] = _note_attention(row)
    return row


def _note_attention(row: dict) -> str | None:
    """Why an attention point is outside the tolerance (None when it is inside)."""
    if row["within_tolerance"]:
        return None
    why = []
    if row["steady_items"] < STEADY_TILES:
        why.append(f"short steady state: {row['steady_items']} KV block(s) after the first on the binding core "
                   f"(the 10 % criterion applies from {STEADY_TILES}); fill, drain and the merge of split parts "
                   "are charged in sequence, and small loads queue behind the KV stream on HBM")
    if row["method"] == "dequant" and row["meta"].get("dequant_chunk_tokens", 0) and \
            row["meta"]["dequant_chunk_tokens"] < 32:
        why.append(f"dequant chunks of {row['meta']['dequant_chunk_tokens']} tokens (the UB is full): the AIV's "
                   "MTE2, Vector and MTE3 are coupled through double-buffered chunk slots and the in-order Vector "
                   "alternates softmax and dequant, so the loads stall while the softmax runs; the model's "
                   "chunks-then-softmax loop prices that coupling from uncontended costs")
    if not why:
        why.append("simulation slower than the model: pipes of near-equal load stall each other; the model charges "
                   "only the slowest" if row["ratio"] > 1 else "simulation faster than the model")
    return "; ".join(why)


def run_point(p, overrides: list[str] | None = None, cfg: HardwareConfig | None = None) -> dict:
    cfg = cfg or load_config(p.hw, overrides or [])
    return point_row(p, cfg, sim_point(p, cfg))


def point_row(p, cfg: HardwareConfig, doc: dict) -> dict:
    """The verify row of point `p` from its simulated run JSON `doc` (sim_point) and the model."""
    if p.kernel == "attention":
        return attention_row(p, cfg, doc)
    mod = model_gemm(cfg, p.m, p.k, p.n, p.method, weights=p.weights, passes=p.passes)
    row = _compare(p, cfg, doc, mod, {"m": p.m, "k": p.k, "n": p.n},
                   {k: v for k, v in doc["meta"].items()
                    if k in ("handoff", "partials", "a_resident_in_l1", "tiling", "l1_weight_buffers",
                             "cores_per_column_range")},
                   mod.tiles_per_core)
    row["note"] = _note(row, cfg, doc["traffic"]["hbm_read_bytes"])
    return row


def _note(row: dict, cfg: HardwareConfig, sim_hbm_read_bytes: int) -> str | None:
    """Why a point is outside the tolerance (None when it is inside)."""
    if row["within_tolerance"]:
        return None
    why = []
    if row["tiles_per_core"] < STEADY_TILES:
        why.append(f"short steady state: {row['tiles_per_core']} tile(s) per core "
                   f"({row['steady_items']} K-chunk iterations; the 10 % criterion applies from {STEADY_TILES} tiles)")
    if row["sim_leader"] != row["model_bound"]:
        why.append(f"binding resource differs (sim {row['sim_leader']}, model {row['model_bound']})")
    if row["ratio"] > 1 and row["method"] == "dequant" and row["sim_hbm_bytes"] > 1.05 * row["model_hbm_bytes"]:
        why.append(f"the simulation's workspace misses more than the model's replay of it (HBM bytes: sim "
                   f"{row['sim_hbm_bytes']:,}, model {row['model_hbm_bytes']:,}): the AIVs' run-ahead, priced from "
                   f"uncontended costs, decides what L2 still holds when a row block re-reads it")
    elif row["ratio"] > 1 and row["method"] == "dequant" and row["m"] <= row["meta"]["tiling"]["m0"]:
        use = sim_hbm_read_bytes / row["sim_cycles"] / cfg.hbm_bytes_per_cycle
        why.append(f"simulation slower than the model: every AIV's in-order MTE2 holds each weight load for its "
                   f"start and first-byte latency, and the AIVs' loads stay partly aligned, so HBM reads use "
                   f"{use:.0%} of its bandwidth over the run; the model's per-round max(latency sum, bandwidth "
                   f"share) assumes one of the two is the whole cost")
    elif row["ratio"] > 1:
        why.append("simulation slower than the model: pipes of near-equal load with two-slot buffers stall "
                   "each other; the model charges only the slowest")
    elif row["method"] == "msd" and row["model_bound"] == "load" and \
            (alt := _msd_overlapped_cycles(row, cfg)) <= row["sim_cycles"] < row["model_cycles"]:
        why.append(f"simulation faster than the model: it lies between the lockstep form of the AIC's W misses "
                   f"(the model, {row['model_cycles']:,} cycles: the stacked-A reads from L2 in series with the "
                   f"core's share of HBM) and the overlapped form ({alt:,}: the A reads hidden under the other "
                   f"cores' W stream); the model takes the overlapped form only where W streams from HBM for "
                   f"the whole kernel, as it is too fast on other short MSD points (docs/formulas.md, section 1)")
    elif row["sim_hbm_bytes"] < 0.9 * row["model_hbm_bytes"]:
        why.append(f"the simulation's reads hit L2 more often than the model's lockstep replay (HBM bytes: sim "
                   f"{row['sim_hbm_bytes']:,}, model {row['model_hbm_bytes']:,}): a working set just above L2, "
                   "which LRU in lockstep order thrashes completely, is partly kept by the cores that drift "
                   "ahead, and how many do is set by the run's dynamics, not by a closed form")
    elif row["meta"].get("a_resident_in_l1") and row["m"] > row["meta"]["tiling"]["m0"]:
        why.append("simulation faster than the model: tiles alternate row blocks, so W misses (first row block) "
                   "and L2 hits alternate; the cores drift out of lockstep and share HBM better than the model's "
                   "per-round sharing assumes")
    else:
        why.append("simulation faster than the model: the simulator overlaps fill, drain or first-byte latencies "
                   "that the model charges in sequence")
    return "; ".join(why)


def _msd_overlapped_cycles(row: dict, cfg: HardwareConfig) -> int:
    return model_msd(cfg, row["m"], row["k"], row["n"], passes=row["passes"], w_overlap=True).cycles


def summarize(rows: list[dict]) -> dict:
    steady = [r for r in rows if r["tiles_per_core"] >= STEADY_TILES]
    return {
        "points": len(rows),
        "traffic_exact": sum(r["traffic_ok"] for r in rows),
        "within_10pct": sum(r["within_tolerance"] for r in rows),
        "steady_points": len(steady),
        "steady_within_10pct": sum(r["within_tolerance"] for r in steady),
        "bound_agrees": sum(r["bound_agrees"] for r in rows),
        "bound_agreement": round(sum(r["bound_agrees"] for r in rows) / len(rows), 4) if rows else None,
    }


def verify(hws: Iterable[str], overrides: list[str] | None = None, quick: bool = False,
           progress: Callable[[dict], None] | None = None, points: list[Point] | None = None) -> dict:
    rows = []
    cfgs = {hw: load_config(hw, overrides or []) for hw in hws}
    for p in points if points is not None else grid(hws, quick):
        try:
            row = run_point(p, cfg=cfgs[p.hw])
        except NpusimError as exc:
            row = {"kernel": p.kernel, "method": p.method, "hw": p.hw, "shape": p.shape, "error": str(exc)}
        rows.append(row)
        if progress:
            progress(row)
    ok = [r for r in rows if "error" not in r]
    return {"rows": rows, "summary": summarize(ok), "groups": list(GROUPS)}


# ---- crossover --------------------------------------------------------------------------------------

def _msd_wins_sim(cfg, k, n, m, passes, cache) -> bool:
    if m not in cache:
        d = sim_gemm(cfg, Point("gemm", "dequant", "int8", cfg.meta.name, m, k, n))["cycles"]
        s = sim_gemm(cfg, Point("gemm", "msd", "int8", cfg.meta.name, m, k, n, passes))["cycles"]
        cache[m] = (d, s)
    d, s = cache[m]
    return s < d


def _msd_wins_model(cfg, k, n, m, passes, cache) -> bool:
    if m not in cache:
        cache[m] = (model_gemm(cfg, m, k, n, "dequant").cycles, model_gemm(cfg, m, k, n, "msd", passes=passes).cycles)
    d, s = cache[m]
    return s < d


def _largest_winning_m(wins: Callable[[int], bool], m_max: int, resolution: float = 1 / 16) -> int:
    """The largest M <= m_max with wins(M), assuming one crossover: M = 1, 4, 16, ... (x4) until MSD
    loses, then bisection until the bracket is within `resolution` x M (or 1). 0 if M = 1 already loses."""
    if not wins(1):
        return 0
    lo, hi = 1, 4
    while hi < m_max and wins(hi):
        lo, hi = hi, hi * 4
    if hi >= m_max:
        if wins(m_max):
            return m_max
        hi = m_max
    while hi - lo > max(1, int(lo * resolution)):
        mid = (lo + hi) // 2
        if wins(mid):
            lo = mid
        else:
            hi = mid
    return lo


def crossover(cfg: HardwareConfig, k: int, n: int, passes: int = 2, m_max: int = 4096,
              resolution: float = 1 / 16) -> dict:
    """Largest M at which MSD-p beats dequant (int8 weights), in the simulator (timing only) and in the
    model, each by the same search (_largest_winning_m); `points` lists every M either one visited."""
    sim_cache: dict = {}
    mod_cache: dict = {}
    m_sim = _largest_winning_m(lambda m: _msd_wins_sim(cfg, k, n, m, passes, sim_cache), m_max, resolution)
    m_mod = _largest_winning_m(lambda m: _msd_wins_model(cfg, k, n, m, passes, mod_cache), m_max, resolution)
    # the full model curve at the points the simulation visited, for the table
    for m in sim_cache:
        _msd_wins_model(cfg, k, n, m, passes, mod_cache)
    pts = sorted(set(sim_cache) | set(mod_cache))
    table = [{"m": m, "sim_dequant": sim_cache.get(m, (None, None))[0], "sim_msd": sim_cache.get(m, (None, None))[1],
              "model_dequant": mod_cache[m][0], "model_msd": mod_cache[m][1]} for m in pts]
    ratio = (m_sim / m_mod) if m_sim and m_mod else None
    # The search assumes one crossover; the model's curve at powers of two shows whether MSD wins again.
    curve = []
    m = 1
    while m <= m_max:
        _msd_wins_model(cfg, k, n, m, passes, mod_cache)
        curve.append({"m": m, "model_dequant": mod_cache[m][0], "model_msd": mod_cache[m][1]})
        m *= 2
    wins_again = [c["m"] for c in curve if c["m"] > m_mod and c["model_msd"] < c["model_dequant"]]
    return {"hw": cfg.meta.name, "k": k, "n": n, "passes": passes, "m_max": m_max, "resolution": resolution,
            "m_star_sim": m_sim, "m_star_model": m_mod, "sim_over_model": ratio, "points": table,
            "model_curve": curve, "model_msd_wins_again_at": wins_again}
