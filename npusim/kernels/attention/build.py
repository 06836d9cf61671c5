"""Flash attention schedules with a (quantized) KV cache, decode and short prefill chunks (DESIGN.md 4.3).

Work: per (batch, kv-head) the query rows are R = (q_heads / kv_heads) x q_len; rows are cut into row
groups that fit the buffers (MLA's 128 heads: e.g. three groups of 43), and a (batch, kv-head, row group) is one
work item. When there are fewer items than cores, the KV length of each item is split into parts on
separate cores (flash-decoding) and merged with a log-sum-exp combine at the end. Each core runs one item
(or part) at a time: its AIC does the matmuls, its two AIVs split the rows for the softmax and the tokens
for dequant.

Per KV block j of an item (software-pipelined: iteration t loads / dequantizes block t and computes
S_t, runs the softmax of block t-1 and its PV, and updates O with block t-2):
  KV   native: AIC MTE2 loads bf16 K (and V) blocks.  dequant: each AIV loads half the block's int8 tokens,
       dequantizes them (cast, x scale, cast) and hands bf16 to the AIC: straight into the L1 block (UB->L1,
       where the part has it) or through a per-core GM workspace ring the AIC loads from.  msd: the AIC
       loads the raw int8 block.  The block stays in L1 (kv_slots deep) until its PV is done.
  S    Cube: Q (or the stacked Q passes) x K^T in chunks of s_chunk tokens (the L0C tile), fp32 (int32);
       FixPipe writes each chunk to a GM ring (role partial), per AIV's rows when a block has several chunks.
  soft AIV: its rows of S -> (combine passes, scale), mask, online softmax (m, l, alpha), P as bf16 or
       as p int8 passes (fixed scale 127) to a GM ring (role activation).
  PV   Cube: P x V in column chunks, FixPipe to a GM ring (role partial).
  O    AIV: O = O x alpha + PV (MSD: combine the passes; O stays in units of 1/127).
At the end O / l (x V scale / 127 for MSD) -> bf16, or (O, m, l) of a part to GM for the merge.
MLA (latent): one int8 cache of Dk = head_dim + rope_dim columns is K; V is its first head_dim columns,
read from the same L1 block (no second load). Roles: the int8 / bf16 cache is kv_cache; the dequantized
bf16 blocks in GM are workspace (the only workspace role in these schedules, so kv_cache + workspace is
the KV-caused traffic); Q and P hand-offs are activation; S, PV and split parts are partial.
S, P and PV hand-offs go through GM on every part (the direct L0C->UB / UB->L1 paths carry only the
dequantized KV).

Every size is chosen once, by `attention_schedule` (the row groups, the block, the chunks, the KV slots,
the split into parts and which core runs what); the closed-form model (npusim.model.attention) reads the
same schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil

from npusim.config.schema import HardwareConfig
from npusim.errors import GraphError
from npusim.graph.kernel_graph import KernelGraph
from npusim.graph.ops import Buffer, GmRef, Path, Role, Unit
from npusim.hw import costs
from npusim.kernels.attention import compute as _compute  # noqa: F401  (registers compute fns, references)
from npusim.kernels.attention.programs import (
    DEQUANT_KV, MERGE_ACC, MERGE_WEIGHTS, ROW_STATE, V_SCALE_MSD, finalize_steps, o_update_steps, q_msd_steps,
    softmax_steps,
)
from npusim.kernels.gemm.quant import emit_program
from npusim.numerics.attention import OUT_DTYPES, block_needs_mask, kv_partition, softmax_scale

KV_TYPES = ("bf16", "int8")
METHODS = ("native", "dequant", "msd")
BLOCKS = (512, 384, 320, 256, 192, 128, 64, 32, 16)   # KV tokens per online-softmax step (L1 block)
S_CHUNKS = (512, 256, 128, 64, 32, 16)                # tokens per S tile in L0C
NC_CHOICES = (512, 256, 128, 64, 32, 16)              # Dv columns per PV tile in L0C
KV_SLOTS = (3, 2)                                     # KV blocks resident in L1
S_SLOTS = (2, 1)                                      # UB slots for S per AIV (1 only where 2 do not fit)
Q_CHUNK_ROWS = 4  # rows per MSD Q decomposition chunk on an AIV
GM_RING = 3  # depth of the per-core GM rings (KV workspace, S, P, PV)
DEQUANT_CHUNK_SLOTS = 2  # UB slots per AIV for the int8 / fp32 / bf16 forms of a dequant chunk
COPY = {"fn": "copy"}


@dataclass(frozen=True)
class AttnPlan:
    rows_w: int      # query rows per work item (row group)
    rv: int          # rows per AIV
    block: int       # KV tokens per block (one online-softmax step)
    s_chunk: int     # tokens per S tile in L0C (a block's S is computed and written in such chunks)
    nc: int          # Dv columns per PV / O chunk
    k0: int          # Cube K step (L0A / L0B chunk)
    tc: int          # tokens per AIV dequant chunk (dequant only)
    kv_slots: int    # KV blocks resident in L1
    s_slots: int     # UB slots per AIV for a block's S (2: the next block's S loads during the softmax)
    kv_direct: bool  # dequant: bf16 KV straight from UB into L1 (UB->L1), no GM workspace
    ub: int
    l1: int
    l0a: int
    l0b: int
    l0c: int


def operand_bytes(method: str) -> tuple[int, int, int]:
    """Bytes per element of (the Cube's A operand Q or P, K / V in L1 and L0B, P in UB and GM)."""
    b = 1 if method == "msd" else 2
    return b, b, b


def ub_slots(method: str, passes: int, rv: int, dk: int, dv: int, block: int, nc: int, tc: int,
             parts: int, s_slots: int = 2, out_bytes: int = 2) -> dict[str, int]:
    """Bytes of every UB slot of one AIV (the builder allocates exactly these)."""
    pp = passes if method == "msd" else 1
    _, _, pb = operand_bytes(method)
    s = {"o": rv * dv * 4, "m": rv * 4, "l": rv * 4, "vs": dv * 4}
    for i in range(s_slots):
        s[f"s{i}"] = pp * rv * block * 4
    for i in range(2):
        s[f"p{i}"] = pp * rv * block * pb
        s[f"alpha{i}"] = rv * 4
        s[f"pv{i}"] = pp * rv * nc * 4
        s[f"out{i}"] = rv * nc * out_bytes
    if method == "msd":
        qr = min(rv, Q_CHUNK_ROWS)
        s.update(q=qr * dk * 2, q_f32=qr * dk * 4, q_passes=passes * qr * dk, ks=dk * 4, rowscale=rv * 4)
    if method == "dequant":
        s["ks"] = dk * 4
        for i in range(DEQUANT_CHUNK_SLOTS):
            s[f"kv_q{i}"] = tc * dk
            s[f"kv_f32_{i}"] = tc * dk * 4
            s[f"kv_bf16_{i}"] = tc * dk * 2
    if parts > 1:
        s.update(ms=parts * rv * 4, ls=parts * rv * 4, w=parts * rv * 4, L=rv * 4, acc=rv * nc * 4)
    return s


def aic_slots(method: str, passes: int, rows_w: int, dk: int, dv: int, latent: bool, block: int, s_chunk: int,
              nc: int, k0: int, kv_slots: int) -> dict[str, tuple[Buffer, int]]:
    """Buffer and bytes of every AIC slot (L1, L0A, L0B, L0C)."""
    pp = passes if method == "msd" else 1
    ab, kb, pb = operand_bytes(method)
    ra = pp * rows_w
    s = {"l1.q": (Buffer.L1, ra * dk * ab)}
    for i in range(kv_slots):
        s[f"l1.k{i}"] = (Buffer.L1, block * dk * kb)
        if not latent:
            s[f"l1.v{i}"] = (Buffer.L1, block * dv * kb)
    for i in range(2):
        s[f"l1.p{i}"] = (Buffer.L1, ra * block * pb)
        s[f"l0a.{i}"] = (Buffer.L0A, ra * k0 * ab)
        s[f"l0b.{i}"] = (Buffer.L0B, k0 * max(s_chunk, nc) * kb)
        s[f"l0c.s{i}"] = (Buffer.L0C, ra * s_chunk * 4)
        s[f"l0c.pv{i}"] = (Buffer.L0C, ra * nc * 4)
    return s


def prefetch_distance(pl: AttnPlan, method: str) -> int:
    """Blocks the KV of block t + d is issued ahead of S_t. native / msd: d = kv_slots - 2 (the in-order
    AIC MTE2 puts the load of block t + d before P_{t-1}; its slot is freed by PV_{t-2}, which must come
    earlier). dequant: d = kv_slots - 1 (the AIVs dequantize block t + d after the softmax of block t - 1,
    and it lands in the slot PV_{t-1} frees: the load follows P_{t-1} and PV_{t-1} in program order)."""
    return pl.kv_slots - (1 if method == "dequant" else 2)


def row_groups(rows: int) -> list[int]:
    """Candidate rows per work item: the halving series rows, rows/2, ... down to 8 rows or the first below
    (or rows), plus rows/3, rows/6, rows/12, ... above that floor (rounded up). The thirds matter where a row
    group's UB limits the block: MLA's 128 MSD rows fit as three groups of 43 with 320-token blocks, where
    halving gives four groups of 32, each of which re-reads the latent cache."""
    out, r = [], rows
    while True:
        out.append(r)
        if r <= min(rows, 8) or r == 1:
            break
        r = ceil(r / 2)
    n = 3
    while ceil(rows / n) > min(rows, 8):
        if ceil(rows / n) not in out:
            out.append(ceil(rows / n))
        n *= 2
    return sorted(out, reverse=True)


def plan_candidates(cfg: HardwareConfig, *, rows: int, dk: int, dv: int, kv_len: int, q_len: int, latent: bool,
                    method: str, passes: int, kv_groups: int, cores: int, block: int | None = None,
                    kv_slots: int | None = None, rows_per_item: int | None = None,
                    out: str = "bf16") -> list[AttnPlan]:
    """Every (row group, KV slots, block) whose slots fit every buffer, each with its largest L0C tiles
    (S chunk, PV chunk) and L0 step, for every row group of `row_groups`."""
    buf = cfg.buffers
    msd = method == "msd"
    pp = passes if msd else 1
    ab, kb, _ = operand_bytes(method)
    ck0 = costs.cube_k0(cfg, "int8" if msd else "bf16")
    groups = row_groups(rows)
    if rows_per_item is not None:
        groups = [rows_per_item]
    ob = 4 if out == "fp32" else 2
    direct = method == "dequant" and cfg.dma.ub_to_l1 is not None
    cap = max(16, ceil(kv_len / 16) * 16)
    blocks = [block] if block else ([b for b in BLOCKS if b <= cap] or [16])
    tried: list[str] = []
    out = []
    for rw in groups:
        rv = ceil(rw / 2)
        ra = pp * rw
        n_items = kv_groups * ceil(rows / rw)
        splits = cores // n_items if n_items < cores else 1
        for bn in blocks:
            parts = len(kv_partition(kv_len, q_len, bn, max(1, splits)))
            for slots in ([kv_slots] if kv_slots else KV_SLOTS):
                best = None
                s_tiles = [c for c in S_CHUNKS if c <= bn] or [bn]
                pv_tiles = [c for c in NC_CHOICES if c <= dv] or [dv]
                for sc, nc, s_sl in [(sc, nc, s_sl) for s_sl in S_SLOTS for sc in s_tiles for nc in pv_tiles]:
                        tc = 0
                        if method == "dequant":
                            base = sum(ub_slots(method, passes, rv, dk, dv, bn, nc, 0, parts, s_sl, ob).values())
                            t = ceil(bn / 2)
                            while t >= 1 and base + 2 * t * dk * (1 + 4 + 2) > buf.ub_bytes:
                                t //= 2
                            if t < 1:
                                tried.append(f"rows {rw}, block {bn}: UB {base} B + dequant chunks > {buf.ub_bytes} B")
                                continue
                            tc = t
                        ub = sum(ub_slots(method, passes, rv, dk, dv, bn, nc, tc, parts, s_sl, ob).values())
                        k0 = 0
                        k_cap = ceil(max(dk, bn) / ck0) * ck0
                        for f in range(16, 0, -1):
                            c = min(ck0 * f, k_cap)
                            if 2 * ra * c * ab <= buf.l0a_bytes and 2 * c * max(sc, nc) * kb <= buf.l0b_bytes:
                                k0 = c
                                break
                        a = aic_slots(method, passes, rw, dk, dv, latent, bn, sc, nc, max(k0, ck0), slots)
                        use = {b_: sum(n for bb, n in a.values() if bb is b_) for b_ in Buffer if b_ is not Buffer.UB}
                        if not (use[Buffer.L1] <= buf.l1_bytes and use[Buffer.L0C] <= buf.l0c_bytes
                                and ub <= buf.ub_bytes and k0 > 0):
                            tried.append(f"rows {rw}, block {bn}, S chunk {sc}, Dv chunk {nc}, {slots} KV slots: "
                                         f"L1 {use[Buffer.L1]}/{buf.l1_bytes} B, L0C {use[Buffer.L0C]}/"
                                         f"{buf.l0c_bytes} B, UB {ub}/{buf.ub_bytes} B, L0A/L0B step {k0 or 'none'}")
                            continue
                        plan = AttnPlan(rw, rv, bn, sc, nc, k0, tc, slots, s_sl, direct, ub, use[Buffer.L1],
                                        use[Buffer.L0A], use[Buffer.L0B], use[Buffer.L0C])
                        score = (s_sl, min(sc, nc), sc, nc)
                        if best is None or score > best[0]:
                            best = (score, plan)
                if best is not None:
                    out.append(best[1])
    if not out:
        raise GraphError(f"attention with Dk = {dk}, Dv = {dv} ({method}) does not fit the buffers of {cfg.meta.name} "
                         f"with any row group and KV block size{' ' + str(block) if block else ''}; smallest tried: "
                         f"{tried[-1]}")
    return out


@dataclass(frozen=True)
class AttnSchedule:
    """Everything the builder decides before it emits an op: shape, plan, work items, KV parts, and the
    (item, part) units and merges of every core, in the order the core runs them."""
    method: str
    passes: int          # MSD passes (1 for native / dequant)
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    rope_dim: int
    latent: bool
    dk: int
    dv: int
    rows: int
    plan: AttnPlan
    items: list          # (batch, kv-head, (r0, r1))
    parts: list          # per part: its blocks [(a, e), ...]
    core_units: list     # per used core: [(item, part), ...]
    merges: list         # per used core: [(item, c0, c1), ...] output columns it merges
    used_cores: int
    out: str = "bf16"    # output dtype: bf16, or fp32 (no output cast: the error of the method itself)
    meta: dict = field(default_factory=dict)

    @property
    def msd(self) -> bool:
        return self.method == "msd"


def _check(cfg, batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim, latent, kv, method, passes, cores):
    for name, v in (("batch", batch), ("q_heads", q_heads), ("kv_heads", kv_heads), ("q_len", q_len),
                    ("kv_len", kv_len), ("head_dim", head_dim)):
        if not isinstance(v, int) or v <= 0:
            raise GraphError(f"attention shape: {name} = {v!r} must be a positive integer")
    if rope_dim < 0:
        raise GraphError(f"attention shape: rope_dim = {rope_dim} must be >= 0")
    if q_heads % kv_heads:
        raise GraphError(f"attention shape: q_heads = {q_heads} is not a multiple of kv_heads = {kv_heads}")
    if latent and kv_heads != 1:
        raise GraphError(f"--latent (MLA) has one latent cache shared by all heads: kv_heads must be 1, not {kv_heads}")
    if q_len > 256:
        raise GraphError(f"q_len = {q_len}: the schedules cover decode and prefill chunks of at most 256 queries")
    if q_len > kv_len:
        raise GraphError(f"q_len = {q_len} exceeds kv_len = {kv_len} (the chunk's own keys are in the cache)")
    if kv not in KV_TYPES:
        raise GraphError(f"--kv {kv!r}: choose one of {', '.join(KV_TYPES)}")
    if method not in METHODS:
        raise GraphError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if (method == "native") != (kv == "bf16"):
        raise GraphError(f"--method {method} with --kv {kv}: native runs on a bf16 cache, dequant and msd on int8")
    if method == "msd" and not 1 <= passes <= 4:
        raise GraphError(f"--passes {passes}: MSD takes 1 to 4 passes")
    cores = cfg.chip.cores if cores is None else cores
    if not 1 <= cores <= cfg.chip.cores:
        raise GraphError(f"--cores {cores}: {cfg.meta.name} has {cfg.chip.cores} cores")
    return cores


def attention_schedule(cfg: HardwareConfig, *, batch: int, q_heads: int, kv_heads: int, q_len: int, kv_len: int,
                       head_dim: int, rope_dim: int = 0, latent: bool = False, kv: str = "int8",
                       method: str = "dequant", passes: int = 2, block: int | None = None,
                       cores: int | None = None, kv_slots: int | None = None,
                       rows_per_item: int | None = None, out: str = "bf16") -> AttnSchedule:
    """Check the shape and choose everything (see AttnSchedule); build_attention emits exactly this."""
    if method == "native" and kv == "int8":
        kv = "bf16"  # native means a bf16 cache
    cores = _check(cfg, batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim, latent, kv, method, passes,
                   cores)
    if block is not None and (block <= 0 or block % 16):
        raise GraphError(f"--block {block}: the KV block must be a positive multiple of 16")
    if kv_slots is not None and kv_slots not in KV_SLOTS:
        raise GraphError(f"kv_slots {kv_slots}: choose one of {', '.join(map(str, KV_SLOTS))}")
    dk, dv = head_dim + rope_dim, head_dim
    rows = q_heads // kv_heads * q_len
    if out not in OUT_DTYPES:
        raise GraphError(f"output dtype {out!r}: choose one of {', '.join(OUT_DTYPES)}")
    if rows_per_item is not None and not 1 <= rows_per_item <= rows:
        raise GraphError(f"rows_per_item {rows_per_item}: choose 1 to {rows} (query rows per (batch, kv-head))")
    cands = plan_candidates(cfg, rows=rows, dk=dk, dv=dv, kv_len=kv_len, q_len=q_len, latent=latent, method=method,
                            passes=passes, kv_groups=batch * kv_heads, cores=cores, block=block, kv_slots=kv_slots,
                            rows_per_item=rows_per_item, out=out)
    shape = (method, passes if method == "msd" else 1, batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim,
             latent, dk, dv, rows, out)
    scheds = [_schedule(shape, pl, cores) for pl in cands]
    if len(scheds) == 1:
        return scheds[0]
    # the fastest by the closed-form model (ties: larger row groups, more KV slots, larger blocks)
    from npusim.model.attention import schedule_cycles
    return min(scheds, key=lambda sc: (round(schedule_cycles(cfg, sc)), -sc.plan.rows_w, -sc.plan.kv_slots,
                                       -sc.plan.block))


def _schedule(shape: tuple, pl: AttnPlan, cores: int) -> AttnSchedule:
    """Work items, KV parts and the units and merges of every core for plan `pl`."""
    method, passes, batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim, latent, dk, dv, rows, out = shape
    groups = [(r0, min(r0 + pl.rows_w, rows)) for r0 in range(0, rows, pl.rows_w)]
    items = [(b, h, rg) for b in range(batch) for h in range(kv_heads) for rg in groups]
    n_splits = cores // len(items) if len(items) < cores else 1
    parts = kv_partition(kv_len, q_len, pl.block, max(1, n_splits))
    units = [(i, s) for i in range(len(items)) for s in range(len(parts))]
    used = min(cores, len(units))
    core_units: list[list] = [[] for _ in range(used)]
    merge_at: dict[int, list[int]] = {}
    for n, (i, s) in enumerate(units):
        c = n % used
        core_units[c].append((i, s))
        merge_at.setdefault(i, []).append(c)
    merges: list[list] = [[] for _ in range(used)]
    if len(parts) > 1:
        # every core that ran a part of an item merges a share of its output columns
        for i, cs in merge_at.items():
            step = ceil(ceil(dv / len(cs)) / 16) * 16
            for k, c in enumerate(cs):
                ca, cb = k * step, min(dv, (k + 1) * step)
                if cb > ca:
                    merges[c].append((i, ca, cb))
    return AttnSchedule(method, passes if method == "msd" else 1, batch, q_heads, kv_heads, q_len, kv_len, head_dim,
                        rope_dim, latent, dk, dv, rows, pl, items, parts, core_units, merges, used, out)


def schedule_meta(s: AttnSchedule) -> dict:
    """The schedule's choices as graph.meta names them (the closed-form model reports the same)."""
    pl = s.plan
    handoff = "ub_to_l1" if pl.kv_direct else ("gm_workspace" if s.method == "dequant" else "none")
    return {"rows_per_item": pl.rows_w, "block": pl.block, "s_chunk": pl.s_chunk, "dv_chunk": pl.nc,
            "cube_k_step": pl.k0, "dequant_chunk_tokens": pl.tc, "kv_slots": pl.kv_slots, "s_slots": pl.s_slots,
            "kv_handoff": handoff,
            "kv_splits": len(s.parts), "work_items": len(s.items), "cores": s.used_cores}


def build_attention(cfg: HardwareConfig, *, batch: int, q_heads: int, kv_heads: int, q_len: int, kv_len: int,
                    head_dim: int, rope_dim: int = 0, latent: bool = False, kv: str = "int8",
                    method: str = "dequant", passes: int = 2, block: int | None = None,
                    cores: int | None = None, kv_slots: int | None = None,
                    rows_per_item: int | None = None, out: str = "bf16") -> KernelGraph:
    """The attention schedule of `method` (native | dequant | msd) as a KernelGraph (see module docstring).
    block, kv_slots, rows_per_item pin those plan choices (default: the fastest by the closed-form model)."""
    s = attention_schedule(cfg, batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len,
                           head_dim=head_dim, rope_dim=rope_dim, latent=latent, kv=kv, method=method, passes=passes,
                           block=block, cores=cores, kv_slots=kv_slots, rows_per_item=rows_per_item, out=out)
    b = _Builder(cfg, s)
    # each _Core refers to its _Builder and back: unlinked, reference counting frees both (and the
    # graph, once the caller drops it) without waiting for the cyclic collector, which the CLI pauses
    b.cores.clear()
    return b.g


class _Builder:
    def __init__(self, cfg: HardwareConfig, s: AttnSchedule):
        self.cfg, self.s = cfg, s
        self.method, self.latent, self.msd = s.method, s.latent, s.msd
        self.p = s.passes
        self.q_len, self.kv_len = s.q_len, s.kv_len
        self.dk, self.dv, self.rows = s.dk, s.dv, s.rows
        self.pl = pl = s.plan
        self.parts, self.items = s.parts, s.items
        method, latent, dk, dv = s.method, s.latent, s.dk, s.dv
        batch, kv_heads, rows = s.batch, s.kv_heads, s.rows
        used_cores = s.used_cores
        self.sm = float(softmax_scale(dk))
        self.ob = 4 if s.out == "fp32" else 2   # output bytes per element
        tag = f"{method}{s.passes if self.msd else ''}"
        g = self.g = KernelGraph(name=f"attention_{tag}_{'mla' if latent else 'gqa'}_b{batch}_h{s.q_heads}x{kv_heads}"
                                 f"_q{s.q_len}_kv{s.kv_len}_d{dk}")
        g.meta = {"kernel": "attention", "method": method, "kv": "bf16" if method == "native" else "int8",
                  "weights": "bf16" if method == "native" else "int8", "batch": batch, "q_heads": s.q_heads,
                  "kv_heads": kv_heads, "q_len": s.q_len, "kv_len": s.kv_len, "head_dim": s.head_dim,
                  "rope_dim": s.rope_dim, "latent": latent, "out": s.out,
                  "handoff": "ub_to_l1" if pl.kv_direct else "gm_workspace",
                  **schedule_meta(s),
                  "buffers_bytes": {"ub": pl.ub, "l1": pl.l1, "l0a": pl.l0a, "l0b": pl.l0b, "l0c": pl.l0c}}
        if self.msd:
            g.meta["passes"] = s.passes
        kvspec = {"kind": "attn_kv", "b": batch, "h": kv_heads, "l": s.kv_len, "dk": dk, "dv": dv, "latent": latent}
        g.tensor("q", (batch, kv_heads, rows, dk), "bf16", Role.ACTIVATION, {"kind": "normal", "std": 1.0})
        if method == "native":
            g.tensor("k", (batch, kv_heads, s.kv_len, dk), "bf16", Role.KV_CACHE, {**kvspec, "part": "k_bf16"})
            inputs = ["q", "k"]
            if not latent:
                g.tensor("v", (batch, kv_heads, s.kv_len, dv), "bf16", Role.KV_CACHE, {**kvspec, "part": "v_bf16"})
                inputs.append("v")
        else:
            g.tensor("kq", (batch, kv_heads, s.kv_len, dk), "int8", Role.KV_CACHE, {**kvspec, "part": "kq"})
            g.tensor("ks", (kv_heads, dk), "fp32", Role.KV_CACHE, {**kvspec, "part": "ks"})
            inputs = ["q", "kq", "ks"]
            if not latent:
                g.tensor("vq", (batch, kv_heads, s.kv_len, dv), "int8", Role.KV_CACHE, {**kvspec, "part": "vq"})
                g.tensor("vs", (kv_heads, dv), "fp32", Role.KV_CACHE, {**kvspec, "part": "vs"})
                inputs += ["vq", "vs"]
        g.tensor("o", (batch, kv_heads, rows, dv), s.out, Role.OUTPUT)
        truth = "attention_fp64_bf16" if method == "native" else "attention_fp64"
        kwargs = {"q_len": s.q_len, "block": pl.block, "n_splits": len(s.parts), "dv": dv, "out": s.out}
        if self.msd:
            kwargs["passes"] = s.passes
        g.reference = {"fn": f"attention_{method}", "inputs": inputs, "output": "o", "kwargs": kwargs, "truth": truth}
        pp, rw, bn = self.p, pl.rows_w, pl.block
        acc_dt = "int32" if self.msd else "fp32"
        if method == "dequant" and not pl.kv_direct:
            g.tensor("kws", (used_cores, GM_RING, bn, dk), "bf16", Role.WORKSPACE)
            if not latent:
                g.tensor("vws", (used_cores, GM_RING, bn, dv), "bf16", Role.WORKSPACE)
        g.tensor("s_ws", (used_cores, GM_RING, pp, rw, bn), acc_dt, Role.PARTIAL)
        g.tensor("p_ws", (used_cores, GM_RING, pp, rw, bn), "int8" if self.msd else "bf16", Role.ACTIVATION)
        g.tensor("pv_ws", (used_cores, GM_RING, pp, rw, dv), acc_dt, Role.PARTIAL)
        if self.msd:
            g.tensor("qa", (used_cores, s.passes, rw, dk), "int8", Role.ACTIVATION)
        if len(s.parts) > 1:
            g.tensor("opart", (len(s.items), len(s.parts), rw, dv), "fp32", Role.PARTIAL)
            g.tensor("mpart", (len(s.items), len(s.parts), rw), "fp32", Role.PARTIAL)
            g.tensor("lpart", (len(s.items), len(s.parts), rw), "fp32", Role.PARTIAL)
        self.gm_readers: dict[tuple, list[int]] = {}
        self.part_done: dict[int, list[int]] = {i: [] for i in range(len(s.items))}
        self.cores = [_Core(self, c) for c in range(used_cores)]
        for c, core in enumerate(self.cores):
            for i, part in s.core_units[c]:
                core.run_unit(i, s.items[i], part)
        for c, core in enumerate(self.cores):
            for i, ca, cb in s.merges[c]:
                core.merge(i, s.items[i], ca, cb)

    # GM ring write-after-read bookkeeping
    def readers(self, key) -> list[int]:
        return self.gm_readers.setdefault(key, [])


class _Core:
    """One core group's slots and program: the AIC's L1 / L0 slots and both AIVs' UB slots."""

    def __init__(self, b: _Builder, c: int):
        self.b, self.c = b, c
        g, pl, dk, dv = b.g, b.pl, b.dk, b.dv
        self.aic = Unit(c, "aic")
        self.aivs = [Unit(c, f"aiv{i}") for i in range(min(2, b.cfg.chip.aiv_per_core))]
        a = aic_slots(b.method, b.p, pl.rows_w, dk, dv, b.latent, pl.block, pl.s_chunk, pl.nc, pl.k0, pl.kv_slots)
        L = {name: g.slot(f"c{c}.{name}", self.aic, buf, n) for name, (buf, n) in a.items()}
        self.a1 = L["l1.q"]
        self.k1 = [L[f"l1.k{i}"] for i in range(pl.kv_slots)]
        self.v1 = [] if b.latent else [L[f"l1.v{i}"] for i in range(pl.kv_slots)]
        self.p1 = [L[f"l1.p{i}"] for i in range(2)]
        self.a0 = [L[f"l0a.{i}"] for i in range(2)]
        self.b0 = [L[f"l0b.{i}"] for i in range(2)]
        self.s0 = [L[f"l0c.s{i}"] for i in range(2)]
        self.o0 = [L[f"l0c.pv{i}"] for i in range(2)]
        self.sl: dict[str, list[int]] = {}
        self.writer: dict[str, int] = {}
        self.n_l0 = self.n_pv = self.n_s = 0
        self.v: list[dict] = []
        for u in self.aivs:
            pre = f"c{c}.{u.name}."
            slots = ub_slots(b.method, b.p, pl.rv, dk, dv, pl.block, pl.nc, pl.tc, len(b.parts), pl.s_slots,
                             4 if b.s.out == "fp32" else 2)
            S = {name: g.slot(pre + name, u, Buffer.UB, n) for name, n in slots.items()}
            d = {"o": S["o"], "s": [S[f"s{i}"] for i in range(pl.s_slots)], "p": [S["p0"], S["p1"]], "m": S["m"],
                 "l": S["l"],
                 "al": [S["alpha0"], S["alpha1"]], "pv": [S["pv0"], S["pv1"]], "out": [S["out0"], S["out1"]],
                 "vs": S["vs"]}
            if b.msd:
                d.update(qin=S["q"], qf=S["q_f32"], qc=S["q_passes"], ks=S["ks"], rs=S["rowscale"])
            if b.method == "dequant":
                d.update(ks=S["ks"], dq=[S[f"kv_q{i}"] for i in range(DEQUANT_CHUNK_SLOTS)],
                         df=[S[f"kv_f32_{i}"] for i in range(DEQUANT_CHUNK_SLOTS)],
                         db=[S[f"kv_bf16_{i}"] for i in range(DEQUANT_CHUNK_SLOTS)])
            if len(b.parts) > 1:
                d.update(ms=S["ms"], ls=S["ls"], w=S["w"], L=S["L"], acc=S["acc"])
            d["n"] = {"s": 0, "pv": 0, "dq": 0, "out": 0}
            self.v.append(d)

    # ---- slot bookkeeping -------------------------------------------------------------------------
    def rd(self, slot: str) -> list[int]:
        return self.sl.setdefault(slot, [])

    def dma(self, name, unit, path, nbytes, role, *, gm=None, src=None, dst=None, deps=(), compute=COPY,
            extra_slot_deps=()):
        g = self.b.g
        sd = list(extra_slot_deps) + (self.rd(dst) if dst else [])
        op = g.dma(name, unit, path, nbytes, role, gm=gm, src=src, dst=dst, deps=deps, slot_deps=sd, compute=compute)
        if dst:
            self.sl[dst] = []
            self.writer[dst] = op
        if src:
            self.rd(src).append(op)
        return op

    def prog(self, unit, tag, steps, elements, reads, writes, deps, compute):
        """A vector program: the first step waits for inputs, the last does the numerics and writes."""
        sd = [x for w in writes for x in self.rd(w)]
        ids = emit_program(self.b.g, unit, tag, steps, elements,
                           first=dict(deps=deps, reads=reads, slot_deps=sd),
                           last=dict(reads=reads, writes=writes, slot_deps=sd, compute=compute))
        for r in reads:
            self.rd(r).extend([ids[0], ids[-1]])
        for w in writes:
            self.sl[w] = [ids[-1]] if w in reads else []
            self.writer[w] = ids[-1]
        return ids[-1]

    def rows_of(self, rw: int) -> list[tuple[int, int]]:
        pl = self.b.pl
        return [(min(rw, a * pl.rv), min(rw, (a + 1) * pl.rv)) for a in range(len(self.aivs))]

    # ---- one work unit: (item, split part) ---------------------------------------------------------
    def run_unit(self, i: int, item, s: int) -> None:
        b, c = self.b, self.c
        bb, h, (r0, r1) = item
        rw = r1 - r0
        p, dk, dv = b.p, b.dk, b.dv
        blocks = b.parts[s]
        nb = len(blocks)
        rows_of = self.rows_of(rw)
        act = [a for a, (x0, x1) in enumerate(rows_of) if x1 > x0]
        ctx = dict(i=i, bb=bb, h=h, r0=r0, rw=rw, rows_of=rows_of, act=act, blocks=blocks, s=s)
        state: dict = {"kv": {}, "S": {}, "P": {}, "PV": {}, "soft": {}}
        # Q: bf16 straight to L1, or the MSD passes via the AIVs and a GM workspace
        if b.msd:
            stores = []
            for a in act:
                u, d, (x0, x1) = self.aivs[a], self.v[a], rows_of[a]
                lk = self.dma(f"ld_ks[{h}]", u, Path.GM_TO_UB, dk * 4, Role.KV_CACHE, gm=GmRef("ks", ((h, h + 1), (0, dk))),
                              dst=d["ks"], compute={"fn": "copy", "reshape": (dk,)})
                lv = self.dma(f"ld_vs[{h}]", u, Path.GM_TO_UB, dv * 4, Role.KV_CACHE,
                              gm=GmRef("vs" if not b.latent else "ks", ((h, h + 1), (0, dv))), dst=d["vs"],
                              compute={"fn": "copy", "reshape": (dv,)})
                self.prog(u, f"_vs[{h}]", V_SCALE_MSD, dv, reads=(d["vs"],), writes=(d["vs"],), deps=(lv,),
                          compute={"fn": "attn_vs_msd"})
                for y0 in range(x0, x1, Q_CHUNK_ROWS):
                    y1 = min(x1, y0 + Q_CHUNK_ROWS)
                    lq = self.dma(f"ld_q[{bb},{h},{r0 + y0}]", u, Path.GM_TO_UB, (y1 - y0) * dk * 2, Role.ACTIVATION,
                                  gm=GmRef("q", ((bb, bb + 1), (h, h + 1), (r0 + y0, r0 + y1), (0, dk))),
                                  dst=d["qin"], compute={"fn": "copy", "reshape": (y1 - y0, dk)})
                    reads = (d["qin"], d["ks"]) + (() if y0 == x0 else (d["rs"],))
                    last = self.prog(u, f"_qmsd[{bb},{h},{r0 + y0}]", q_msd_steps(p), (y1 - y0) * dk,
                                     reads=reads, writes=(d["qc"], d["rs"]), deps=(lq, lk),
                                     compute={"fn": "attn_q_msd", "sm": b.sm, "passes": p, "row_off": y0 - x0,
                                              "rows": x1 - x0})
                    st = self.dma(f"st_qa[{bb},{h},{r0 + y0}]", u, Path.UB_TO_GM, p * (y1 - y0) * dk,
                                  Role.ACTIVATION, gm=GmRef("qa", ((c, c + 1), (0, p), (y0, y1), (0, dk))), src=d["qc"],
                                  deps=[last], extra_slot_deps=b.readers(("qa", c)))
                    stores.append(st)
            # the raw int8 KV needs no Q: the first block's load goes ahead of the Q passes on the in-order
            # MTE2 (the Q passes are ready about when it lands; later blocks would hold them back)
            self.kv(ctx, 0, state)
            la = self.dma(f"ld_qa[{bb},{h},{r0}]", self.aic, Path.GM_TO_L1, p * rw * dk, Role.ACTIVATION,
                          gm=GmRef("qa", ((c, c + 1), (0, p), (0, rw), (0, dk))), dst=self.a1, deps=stores,
                          compute={"fn": "copy", "reshape": (p * rw, dk)})
            b.gm_readers[("qa", c)] = [la]
        else:
            la = self.dma(f"ld_q[{bb},{h},{r0}]", self.aic, Path.GM_TO_L1, rw * dk * 2, Role.ACTIVATION,
                          gm=GmRef("q", ((bb, bb + 1), (h, h + 1), (r0, r1), (0, dk))), dst=self.a1,
                          compute={"fn": "copy", "reshape": (rw, dk)})
            if b.method == "dequant":
                for a, u in enumerate(self.aivs):
                    d = self.v[a]
                    self.dma(f"ld_ks[{h}]", u, Path.GM_TO_UB, dk * 4, Role.KV_CACHE,
                             gm=GmRef("ks", ((h, h + 1), (0, dk))), dst=d["ks"], compute={"fn": "copy", "reshape": (dk,)})
                    if not b.latent:
                        self.dma(f"ld_vs[{h}]", u, Path.GM_TO_UB, dv * 4, Role.KV_CACHE,
                                 gm=GmRef("vs", ((h, h + 1), (0, dv))), dst=d["vs"],
                                 compute={"fn": "copy", "reshape": (dv,)})
        ctx["la"] = la
        # KV loads run `ahead` blocks in front of S: as far as the in-order AIC MTE2 allows, the load of
        # block t + ahead (issued before P_{t-1}) may only wait for the PV of block t - 2 (a KV slot).
        ahead = prefetch_distance(b.pl, b.method)
        for t in range(min(ahead, nb)):
            if t not in state["kv"]:
                self.kv(ctx, t, state)
        # dequant: the AIVs dequantize block t + ahead after the softmax of block t - 1 (the softmax is on
        # the critical path; the block is needed iterations later) and hand it over after PV_{t-1}, whose
        # slot it takes: the AIC's workspace load follows P_{t-1} on the in-order MTE2 (P never queues
        # behind it), a UB->L1 write follows PV_{t-1}'s reads of the slot.
        late = b.method == "dequant"
        direct = b.pl.kv_direct
        for t in range(nb + 2):
            nxt = t + ahead if t + ahead < nb and t + ahead not in state["kv"] else None
            if t < nb:
                if nxt is not None and not late:
                    self.kv(ctx, nxt, state)
                self.scores(ctx, t, state)
            if 0 <= t - 1 < nb:
                self.softmax(ctx, t - 1, state)
            if nxt is not None and late and not direct:
                self.kv(ctx, nxt, state, part="aiv")
            if 0 <= t - 1 < nb:
                self.pv(ctx, t - 1, state)
            if nxt is not None and late:
                self.kv(ctx, nxt, state, part="all" if direct else "aic")
            if 0 <= t - 2 < nb:
                self.o_update(ctx, t - 2, state)
        self.finish(ctx, state)

    # KV block t into L1 (via dequant on the AIVs: through the workspace ring, or UB->L1)
    def kv(self, ctx, t, state, part: str = "all"):
        """part: "aiv" emits the AIVs' loads, dequant and hand-off only, "aic" the AIC's workspace loads
        (dequant through GM); "all" both."""
        b, pl, c = self.b, self.b.pl, self.c
        bb, h = ctx["bb"], ctx["h"]
        a0, a1 = ctx["blocks"][t]
        n = a1 - a0
        j = t % GM_RING
        slot = t % pl.kv_slots
        dk, dv = b.dk, b.dv
        tensors = [("k", dk, self.k1[slot])] + ([] if b.latent else [("v", dv, self.v1[slot])])
        loads = []
        pending = state.setdefault("kv_stores", {})
        for name, width, l1 in tensors:
            if b.method == "dequant" and part == "aic":
                stores, key, ws = pending.pop((t, name))
                ld = [self.dma(f"ld_{name}deq[{bb},{h},{a0}]", self.aic, Path.GM_TO_L1, n * width * 2,
                               Role.WORKSPACE, gm=GmRef(ws, ((c, c + 1), (j, j + 1), (0, n), (0, width))), dst=l1,
                               deps=stores, compute={"fn": "copy", "reshape": (n, width)})]
                b.gm_readers[key] = list(ld)
            elif b.method == "dequant":
                ws = f"{name}ws"
                key = (ws, c, j)
                stores = []
                l1_free = list(self.rd(l1))   # the block's previous readers (MTE1 of S and PV)
                half = ceil(n / len(self.aivs))
                for a, u in enumerate(self.aivs):
                    d = self.v[a]
                    ta, tb = a0 + a * half, min(a1, a0 + (a + 1) * half)
                    for x0 in range(ta, tb, pl.tc):
                        x1 = min(tb, x0 + pl.tc)
                        m = d["n"]["dq"] % 2
                        d["n"]["dq"] += 1
                        tg = f"{name}[{bb},{h},{x0}:{x1}]"
                        lq = self.dma(f"ld_{tg}", u, Path.GM_TO_UB, (x1 - x0) * width, Role.KV_CACHE,
                                      gm=GmRef(f"{name}q", ((bb, bb + 1), (h, h + 1), (x0, x1), (0, width))),
                                      dst=d["dq"][m], compute={"fn": "copy", "reshape": (x1 - x0, width)})
                        sc = d["ks"] if name == "k" else d["vs"]
                        last = self.prog(u, f"_dq{tg}", DEQUANT_KV, (x1 - x0) * width, reads=(d["dq"][m], sc),
                                         writes=(d["db"][m],), deps=(lq,),
                                         compute={"fn": "dequant_int", "group_k": None})
                        self.rd(d["df"][m])  # the fp32 temporary is part of the program (timing only)
                        if pl.kv_direct:
                            st = b.g.dma(f"ub2l1_{name}deq{tg}", u, Path.UB_TO_L1, (x1 - x0) * width * 2,
                                         Role.KV_CACHE, src=d["db"][m], dst=l1, deps=[last], slot_deps=l1_free,
                                         compute={"fn": "copy", "dst_sub": ((x0 - a0, x1 - a0), (0, width)),
                                                  "dst_shape": (n, width)})
                            self.rd(d["db"][m]).append(st)
                        else:
                            st = self.dma(f"st_{name}deq{tg}", u, Path.UB_TO_GM, (x1 - x0) * width * 2,
                                          Role.WORKSPACE,
                                          gm=GmRef(ws, ((c, c + 1), (j, j + 1), (x0 - a0, x1 - a0), (0, width))),
                                          src=d["db"][m], deps=[last], extra_slot_deps=b.readers(key))
                        stores.append(st)
                if pl.kv_direct:
                    self.sl[l1] = []
                    ld = stores
                elif part == "aiv":
                    pending[(t, name)] = (stores, key, ws)
                    continue
                else:
                    ld = [self.dma(f"ld_{name}deq[{bb},{h},{a0}]", self.aic, Path.GM_TO_L1, n * width * 2,
                                   Role.WORKSPACE, gm=GmRef(ws, ((c, c + 1), (j, j + 1), (0, n), (0, width))), dst=l1,
                                   deps=stores, compute={"fn": "copy", "reshape": (n, width)})]
                    b.gm_readers[key] = list(ld)
            else:
                src = name if b.method == "native" else f"{name}q"
                ld = [self.dma(f"ld_{name}[{bb},{h},{a0}]", self.aic, Path.GM_TO_L1,
                               n * width * (2 if b.method == "native" else 1), Role.KV_CACHE,
                               gm=GmRef(src, ((bb, bb + 1), (h, h + 1), (a0, a1), (0, width))), dst=l1,
                               compute={"fn": "copy", "reshape": (n, width)})]
            loads.append(ld)
        if part == "aiv" and not pl.kv_direct:
            return
        state["kv"][t] = (loads, self.k1[slot], self.k1[slot] if b.latent else self.v1[slot])

    def _mm(self, tag, a_slot, a_dep, a_rows, a_col0, b_slot, b_dep, k_total, b_sub, transpose, n, acc, dtype):
        """MTE1 + CUBE over k_total in steps of k0: acc = A[:, a_col0 + k] x B(k); B(k) from b_sub(k0, k1)."""
        g, pl = self.b.g, self.b.pl
        ab = 1 if self.b.msd else 2
        mm = -1
        first = True
        for ka in range(0, k_total, pl.k0):
            kb_ = min(k_total, ka + pl.k0)
            s0a, s0b = self.a0[self.n_l0 % 2], self.b0[self.n_l0 % 2]
            self.n_l0 += 1
            ma = self.dma(f"l0a{tag}[{ka}]", self.aic, Path.L1_TO_L0A, a_rows * (kb_ - ka) * ab, Role.ACTIVATION,
                          src=a_slot, dst=s0a, deps=[a_dep],
                          compute={"fn": "copy", "sub": ((0, a_rows), (a_col0 + ka, a_col0 + kb_))})
            sub = b_sub(ka, kb_)
            mb = self.dma(f"l0b{tag}[{ka}]", self.aic, Path.L1_TO_L0B, (kb_ - ka) * n * ab, Role.KV_CACHE,
                          src=b_slot, dst=s0b, deps=b_dep,
                          compute={"fn": "attn_copy_t" if transpose else "copy", "sub": sub})
            mm = g.mmad(f"mmad{tag}[{ka}]", self.aic, a_rows, kb_ - ka, n, dtype,
                        reads=[s0a, s0b] if first else [s0a, s0b, acc], writes=[acc], deps=[ma, mb],
                        slot_deps=self.rd(acc) if first else (), compute={"fn": "mmad", "init": first})
            if first:
                self.sl[acc] = []
            self.sl[s0a], self.sl[s0b] = [mm], [mm]
            first = False
        return mm

    def scores(self, ctx, t, state):
        """S of block t in L0C tiles of s_chunk tokens, each written to the S ring (per AIV's rows when the
        block has several tiles, so that every AIV reads its rows of the whole block in one load)."""
        b, pl, c = self.b, self.b.pl, self.c
        loads, k1, _ = state["kv"][t]
        a0, a1 = ctx["blocks"][t]
        n, rw, p, dk = a1 - a0, ctx["rw"], b.p, b.dk
        dtype = "int8" if b.msd else "bf16"
        j = t % GM_RING
        key = ("s_ws", c, j)
        fixes = []
        chunks = [(s0, min(n, s0 + pl.s_chunk)) for s0 in range(0, n, pl.s_chunk)]
        for s0, s1 in chunks:
            acc = self.s0[self.n_s % 2]
            self.n_s += 1
            mm = self._mm(f"_s[{ctx['h']},{a0 + s0}]", self.a1, ctx["la"], p * rw, 0, k1, loads[0], dk,
                          lambda ka, kb_, s0=s0, s1=s1: ((s0, s1), (ka, kb_)), True, s1 - s0, acc, dtype)
            outs = [(0, rw)] if len(chunks) == 1 else [ctx["rows_of"][a] for a in ctx["act"]]
            ops = []
            for x0, x1 in outs:
                fix = self.dma(f"st_s[{ctx['h']},{a0 + s0},{x0}]", self.aic, Path.L0C_TO_GM,
                               p * (x1 - x0) * (s1 - s0) * 4, Role.PARTIAL,
                               gm=GmRef("s_ws", ((c, c + 1), (j, j + 1), (0, p), (x0, x1), (s0, s1))),
                               src=acc, deps=[mm], extra_slot_deps=b.readers(key),
                               compute={"fn": "copy", "view": (p, rw, s1 - s0),
                                        "sub": ((0, p), (x0, x1), (0, s1 - s0))})
                ops.append(fix)
            self.sl[acc] = list(ops)
            fixes += ops
        state["S"][t] = fixes

    def softmax(self, ctx, t, state):
        b, c = self.b, self.c
        a0, a1 = ctx["blocks"][t]
        n, p, j = a1 - a0, b.p, t % GM_RING
        masked = block_needs_mask(b.kv_len, b.q_len, a1)
        first = t == 0
        stores, s_loads = [], []
        for a in ctx["act"]:
            u, d, (x0, x1) = self.aivs[a], self.v[a], ctx["rows_of"][a]
            rv = x1 - x0
            k = d["n"]["s"] % len(d["s"])
            d["n"]["s"] += 1
            sin, pout = d["s"][k], d["p"][d["n"]["s"] % 2]
            ls = self.dma(f"ld_s[{ctx['h']},{a0},{x0}]", u, Path.GM_TO_UB, p * rv * n * 4, Role.PARTIAL,
                          gm=GmRef("s_ws", ((c, c + 1), (j, j + 1), (0, p), (x0, x1), (0, n))), dst=sin,
                          deps=state["S"][t], compute={"fn": "copy", "reshape": (p, rv, n)})
            s_loads.append(ls)
            reads = (sin,) + ((d["rs"],) if b.msd else ()) + (() if first else (d["m"], d["l"]))
            writes = (pout, d["m"], d["l"], d["al"][t % 2])
            spec = {"fn": "attn_softmax", "method": b.method, "sm": b.sm, "first": first, "mask": masked,
                    "col0": a0, "kv_len": b.kv_len, "q_len": b.q_len, "row0": ctx["r0"] + x0, "passes": p}
            last = self.prog(u, f"_soft[{ctx['h']},{a0},{x0}]", softmax_steps(b.method, p, masked), rv * n,
                             reads=reads, writes=writes, deps=(ls,), compute=spec)
            if not first:
                last = self.prog(u, f"_row[{ctx['h']},{a0},{x0}]", ROW_STATE, rv, reads=(d["m"], d["l"]),
                                 writes=(), deps=(last,), compute=None)
            key = ("p_ws", c, j)
            st = self.dma(f"st_p[{ctx['h']},{a0},{x0}]", u, Path.UB_TO_GM, p * rv * n * (1 if b.msd else 2),
                          Role.ACTIVATION, gm=GmRef("p_ws", ((c, c + 1), (j, j + 1), (0, p), (x0, x1), (0, n))),
                          src=pout, deps=[last], extra_slot_deps=b.readers(key))
            stores.append(st)
            state["soft"][(t, a)] = last
        b.gm_readers[("s_ws", c, j)] = s_loads
        state["P"][t] = stores

    def pv(self, ctx, t, state):
        b, pl, c = self.b, self.b.pl, self.c
        a0, a1 = ctx["blocks"][t]
        n, rw, p, dv, j = a1 - a0, ctx["rw"], b.p, b.dv, t % GM_RING
        loads, _, v1 = state["kv"][t]
        p1 = self.p1[t % 2]
        lp = self.dma(f"ld_p[{ctx['h']},{a0}]", self.aic, Path.GM_TO_L1, p * rw * n * (1 if b.msd else 2),
                      Role.ACTIVATION, gm=GmRef("p_ws", ((c, c + 1), (j, j + 1), (0, p), (0, rw), (0, n))), dst=p1,
                      deps=state["P"][t], compute={"fn": "copy", "reshape": (p * rw, n)})
        b.gm_readers[("p_ws", c, j)] = [lp]
        dtype = "int8" if b.msd else "bf16"
        fixes = []
        key = ("pv_ws", c, j)
        for c0 in range(0, dv, pl.nc):
            c1 = min(dv, c0 + pl.nc)
            acc = self.o0[self.n_pv % 2]
            self.n_pv += 1
            mm = self._mm(f"_pv[{ctx['h']},{a0},{c0}]", p1, lp, p * rw, 0, v1, loads[-1], n,
                          lambda ka, kb_, c0=c0, c1=c1: ((ka, kb_), (c0, c1)), False, c1 - c0, acc, dtype)
            fix = self.dma(f"st_pv[{ctx['h']},{a0},{c0}]", self.aic, Path.L0C_TO_GM, p * rw * (c1 - c0) * 4,
                           Role.PARTIAL, gm=GmRef("pv_ws", ((c, c + 1), (j, j + 1), (0, p), (0, rw), (c0, c1))),
                           src=acc, deps=[mm], extra_slot_deps=b.readers(key))
            self.sl[acc] = [fix]
            fixes.append((c0, c1, fix))
        b.gm_readers[key] = []
        state["PV"][t] = fixes

    def o_update(self, ctx, t, state):
        b, c = self.b, self.c
        a0 = ctx["blocks"][t][0]
        p, j = b.p, t % GM_RING
        first = t == 0
        for a in ctx["act"]:
            u, d, (x0, x1) = self.aivs[a], self.v[a], ctx["rows_of"][a]
            rv = x1 - x0
            for c0, c1, fix in state["PV"][t]:
                k = d["n"]["pv"] % 2
                d["n"]["pv"] += 1
                pin = d["pv"][k]
                lp = self.dma(f"ld_pv[{ctx['h']},{a0},{x0},{c0}]", u, Path.GM_TO_UB, p * rv * (c1 - c0) * 4,
                              Role.PARTIAL, gm=GmRef("pv_ws", ((c, c + 1), (j, j + 1), (0, p), (x0, x1), (c0, c1))),
                              dst=pin, deps=[fix], compute={"fn": "copy", "reshape": (p, rv, c1 - c0)})
                b.readers(("pv_ws", c, j)).append(lp)
                reads = (pin,) + (() if first else (d["o"], d["al"][t % 2]))
                self.prog(u, f"_o[{ctx['h']},{a0},{x0},{c0}]", o_update_steps(b.method, p, first), rv * (c1 - c0),
                          reads=reads, writes=(d["o"],), deps=(lp, state["soft"][(t, a)]),
                          compute={"fn": "attn_o_update", "method": b.method, "first": first, "cols": (c0, c1),
                                   "dv": b.dv})

    def finish(self, ctx, state):
        b, pl = self.b, self.b.pl
        bb, h, r0 = ctx["bb"], ctx["h"], ctx["r0"]
        dv = b.dv
        split = len(b.parts) > 1
        for a in ctx["act"]:
            u, d, (x0, x1) = self.aivs[a], self.v[a], ctx["rows_of"][a]
            rv = x1 - x0
            if split:
                i, s = ctx["i"], ctx["s"]
                deps = [self.writer[d["o"]]]
                so = self.dma(f"st_opart[{i},{s},{x0}]", u, Path.UB_TO_GM, rv * dv * 4, Role.PARTIAL,
                              gm=GmRef("opart", ((i, i + 1), (s, s + 1), (x0, x1), (0, dv))), src=d["o"], deps=deps)
                sm = self.dma(f"st_mpart[{i},{s},{x0}]", u, Path.UB_TO_GM, rv * 4, Role.PARTIAL,
                              gm=GmRef("mpart", ((i, i + 1), (s, s + 1), (x0, x1))), src=d["m"], deps=deps)
                sl = self.dma(f"st_lpart[{i},{s},{x0}]", u, Path.UB_TO_GM, rv * 4, Role.PARTIAL,
                              gm=GmRef("lpart", ((i, i + 1), (s, s + 1), (x0, x1))), src=d["l"], deps=deps)
                b.part_done[i] += [so, sm, sl]
                continue
            for c0 in range(0, dv, pl.nc):
                c1 = min(dv, c0 + pl.nc)
                k = d["n"]["out"] % 2
                d["n"]["out"] += 1
                out = d["out"][k]
                reads = (d["o"], d["l"]) + ((d["vs"],) if b.msd else ())
                last = self.prog(u, f"_fin[{h},{x0},{c0}]", finalize_steps(b.method, b.s.out), rv * (c1 - c0),
                                 reads=reads, writes=(out,), deps=[self.writer[d["o"]]],
                                 compute={"fn": "attn_finalize", "cols": (c0, c1), "out": b.s.out})
                self.dma(f"st_o[{bb},{h},{r0 + x0},{c0}]", u, Path.UB_TO_GM, rv * (c1 - c0) * b.ob, Role.OUTPUT,
                         gm=GmRef("o", ((bb, bb + 1), (h, h + 1), (r0 + x0, r0 + x1), (c0, c1))), src=out, deps=[last])

    def merge(self, i, item, ca, cb):
        """Log-sum-exp merge of every part of item i, on this core's AIVs (after all parts are written)."""
        b, pl = self.b, self.b.pl
        bb, h, (r0, r1) = item
        rw, ns = r1 - r0, len(b.parts)
        done = b.part_done[i]
        for a, (x0, x1) in enumerate(self.rows_of(rw)):
            u, d = self.aivs[a], self.v[a]
            rv = x1 - x0
            if rv <= 0:
                continue
            lm = self.dma(f"ld_mpart[{i},{x0},{ca}]", u, Path.GM_TO_UB, ns * rv * 4, Role.PARTIAL,
                          gm=GmRef("mpart", ((i, i + 1), (0, ns), (x0, x1))), dst=d["ms"], deps=done)
            ll = self.dma(f"ld_lpart[{i},{x0}]", u, Path.GM_TO_UB, ns * rv * 4, Role.PARTIAL,
                          gm=GmRef("lpart", ((i, i + 1), (0, ns), (x0, x1))), dst=d["ls"], deps=done)
            wl = self.prog(u, f"_mw[{i},{x0}]", MERGE_WEIGHTS, ns * rv, reads=(d["ms"], d["ls"]),
                           writes=(d["w"], d["L"]), deps=(lm, ll), compute={"fn": "attn_merge_w", "parts": ns})
            for c0 in range(ca, cb, pl.nc):
                c1 = min(cb, c0 + pl.nc)
                for s in range(ns):
                    k = d["n"]["pv"] % 2
                    d["n"]["pv"] += 1
                    pin = d["pv"][k]
                    lo = self.dma(f"ld_opart[{i},{s},{x0},{c0}]", u, Path.GM_TO_UB, rv * (c1 - c0) * 4, Role.PARTIAL,
                                  gm=GmRef("opart", ((i, i + 1), (s, s + 1), (x0, x1), (c0, c1))), dst=pin, deps=done)
                    reads = (pin, d["w"]) + (() if s == 0 else (d["acc"],))
                    self.prog(u, f"_macc[{i},{s},{x0},{c0}]", MERGE_ACC, rv * (c1 - c0), reads=reads,
                              writes=(d["acc"],), deps=(lo, wl),
                              compute={"fn": "attn_merge_acc", "part": s, "first": s == 0})
                k = d["n"]["out"] % 2
                d["n"]["out"] += 1
                out = d["out"][k]
                reads = (d["acc"], d["L"]) + ((d["vs"],) if b.msd else ())
                deps = [self.writer[d["acc"]]]
                last = self.prog(u, f"_mfin[{i},{x0},{c0}]", finalize_steps(b.method, b.s.out), rv * (c1 - c0),
                                 reads=reads, writes=(out,), deps=deps,
                                 compute={"fn": "attn_finalize", "cols": (c0, c1), "acc_cols": True, "out": b.s.out})
                self.dma(f"st_o[{bb},{h},{r0 + x0},{c0}]", u, Path.UB_TO_GM, rv * (c1 - c0) * b.ob, Role.OUTPUT,
                         gm=GmRef("o", ((bb, bb + 1), (h, h + 1), (r0 + x0, r0 + x1), (c0, c1))), src=out, deps=[last])
