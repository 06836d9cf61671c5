"""Shared pieces of the closed-form models (docs/formulas.md): the per-core pipeline formula, GM traffic
ledgers, the grouping of simulator critical-path causes and model terms into resources, and the registry
a kernel's model is looked up in.

A model is a function (cfg, **shape and options) -> ModelResult, registered under (kernel, method) with
`register`. The GEMM models live in npusim.model.gemm; an attention model registers itself the same way
(e.g. `@register("attention", "msd")`) and verify / crossover pick it up through `model_for`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from operator import itemgetter
from math import ceil
from typing import Callable, Iterable

from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.graph.ops import Path, Role
from npusim.hw import costs
from npusim.hw.memory import L2Cache

ROLES = tuple(r.value for r in Role)

# ---- resource groups: one definition for the simulator's critical-path keys and the model's terms ----
GROUPS = ("cube", "vector", "load", "store", "mte1", "sync")


def group_of(key: str) -> str:
    """Resource group of a critical-path cause (aic.cube, aiv.vector, aic.mte2:weight, hbm, flag, ...)
    or of a model stage key (aic.cube, aiv.mte2, hbm, ...). GM reads (any MTE2, HBM, L2) are "load";
    GM/UB/L1 writes out of UB or L0C (MTE3, FixPipe) are "store"; flags and buffer waits are "sync"."""
    pipe = key.split(":", 1)[0]
    if pipe.endswith("cube"):
        return "cube"
    if pipe.endswith("vector"):
        return "vector"
    if pipe.endswith("mte2") or pipe in ("hbm", "l2"):
        return "load"
    if pipe.endswith("mte3") or pipe.endswith("fixp"):
        return "store"
    if pipe.endswith("mte1"):
        return "mte1"
    if pipe in ("flag", "buffer", "sync"):
        return "sync"
    return pipe


def leader(groups: dict[str, int]) -> str:
    """The group with the most cycles (ties: the order of GROUPS)."""
    if not groups:
        return "none"
    return max(groups, key=lambda g: (groups[g], -GROUPS.index(g) if g in GROUPS else -99))


def grouped(causes: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for k, v in causes.items():
        out[group_of(k)] += v
    return dict(out)


# ---- GM transfer costs as the simulator prices them (npusim.hw.machine._duration, docs/model.md) ----

class Gm:
    """Durations of GM reads and writes at an assumed level: an L2 hit at min(port, l2.read_rate); an HBM
    miss at hbm.first_byte_cycles + bytes / min(port, HBM bandwidth) (a lone transfer). Contention for HBM
    is a separate term: the chip's HBM bytes / HBM bytes per cycle."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        self.l2 = cfg.l2.enabled

    def read(self, path: Path, nbytes: int, hit: bool, streams: int = 1) -> int:
        """streams: how many transfers miss L2 at the same time, chip-wide (they share HBM equally)."""
        p = costs.port(self.cfg, path)
        if hit and self.l2:
            return p.start_cycles + costs.transfer_cycles(nbytes, min(p.rate_bytes_per_cycle,
                                                                      self.cfg.l2.read_rate_bytes_per_cycle))
        return p.start_cycles + self.cfg.hbm.first_byte_cycles + costs.transfer_cycles(
            nbytes, min(p.rate_bytes_per_cycle, self.cfg.hbm_bytes_per_cycle / max(1, streams)))

    def miss(self, path: Path, nbytes: int, streams: int) -> tuple[int, float]:
        """An HBM read as (latency-bound cycles, bandwidth-bound cycles): alone it takes start + first byte
        + bytes / port; with `streams` transfers missing together, the chip's HBM gives it bandwidth / streams.
        A pipe's misses in one round take max(sum of the first, sum of the second) (Stage.add_miss)."""
        p = costs.port(self.cfg, path)
        lat = p.start_cycles + self.cfg.hbm.first_byte_cycles + costs.transfer_cycles(
            nbytes, min(p.rate_bytes_per_cycle, self.cfg.hbm_bytes_per_cycle))
        return lat, nbytes * max(1, streams) / self.cfg.hbm_bytes_per_cycle

    def write(self, path: Path, nbytes: int) -> int:
        p = costs.port(self.cfg, path)
        cap = self.cfg.l2.write_rate_bytes_per_cycle if self.l2 else self.cfg.hbm_bytes_per_cycle
        return p.start_cycles + costs.transfer_cycles(nbytes, min(p.rate_bytes_per_cycle, cap))

    def on_chip(self, path: Path, nbytes: int) -> int:
        return costs.dma_cycles_uncontended(self.cfg, path, nbytes)


# ---- the per-core pipeline -------------------------------------------------------------------------

@dataclass
class Stage:
    """One pipe (or the core's HBM share) in a chain: total busy cycles on the binding core, and the
    durations of its first and last item (what fill and drain are made of)."""
    key: str
    busy: float = 0
    first: float | None = None
    last: float = 0
    items: int = 0
    cur: int = 0                                            # the round (tile index on the core) being added
    rounds: dict = field(default_factory=lambda: defaultdict(float))
    misses: dict = field(default_factory=dict)              # round -> [latency-bound, bandwidth-bound]
    parts: dict = field(default_factory=dict)               # a loop of other pipes: their cycles, for attribution
    overlap: bool = False   # settle: this pipe's L2 hits overlap the other cores' HBM share (docs/formulas.md 1)
    couples: tuple = ()     # a loop of these stages: a round's cycles go to the busiest of them in that round

    def split(self, cycles: float) -> dict[str, float]:
        """`cycles` of this stage attributed to the stages it is made of (itself if none)."""
        tot = sum(self.parts.values())
        if not tot:
            return {self.key: cycles}
        return {k: cycles * v / tot for k, v in self.parts.items()}

    def split_round(self, r: int, cycles: float) -> dict[str, float]:
        """`cycles` of round r attributed: for a loop that couples stages, to the busiest of them in r."""
        if self.couples:
            return {max(self.couples, key=lambda x: x.rounds.get(r, 0.0)).key: cycles}
        return self.split(cycles)

    def add_miss(self, parts: tuple[int, float]) -> None:
        """One HBM read (Gm.miss); its time is settled per round by `settle`."""
        lat, bw = parts
        m = self.misses.setdefault(self.cur, [0.0, 0.0])
        m[0] += lat
        m[1] += bw
        if self.first is None:
            self.first = lat
        self.last = lat
        self.items += 1

    def settle(self) -> None:
        for r, (lat, bw) in self.misses.items():
            own = self.rounds[r] if self.overlap else 0.0
            t = max(own + lat, bw) - own
            self.busy += t
            self.rounds[r] += t
        self.misses = {}

    def add(self, cycles: float, n: int = 1) -> None:
        """n items of `cycles` each."""
        self.block(cycles * n, cycles, cycles, n)

    def block(self, total: float, first: float, last: float, n: int) -> None:
        """n items taking `total` cycles, the first taking `first` and the last `last`."""
        if n <= 0:
            return
        if self.first is None:
            self.first = first
        self.busy += total
        self.rounds[self.cur] += total
        self.last = last
        self.items += n


@dataclass
class PipeTime:
    cycles: float
    bound: str                       # stage key with the largest lead + busy + tail
    attribution: dict[str, float]    # stage key (or "flag") -> cycles of the binding path
    busy: dict[str, float]


def set_round(stages, r: int) -> None:
    for s in stages:
        s.cur = r


def pipeline(chain: list[list[Stage]], links: list[int], window: int = 1) -> PipeTime:
    """Latency of a chain of stage positions, each position a list of stages working in parallel (a pipe
    and the HBM term, or two AIVs), links[i] the flag latency between positions i and i+1:

        T = max over stages s at position i of  lead_i + S_s + tail_i
        lead_i = sum_{j<i} (first_j + link_j),   tail_i = sum_{j>i} (link_{j-1} + last_j)
        S_s    = max(busy_s, sum over rounds r of max over stages t of busy_t(r))   for the binding s

    first_j / last_j = the largest first / last item over the stages at position j. For the binding stage
    this is the classic fill + steady state + drain of a pipeline; a round is the r-th output tile of
    every core (the cores run in lockstep), and the sum over rounds lets the binding pipe change from one
    round to the next (e.g. HBM while W is first read, then the Cube while it is re-read from L2).
    `window` rounds at a time are summed before the max is taken where buffers between the positions
    let one run that many rounds ahead of the next: a round's excess on one pipe is then absorbed by the
    next round's slack on it."""
    for p in chain:
        for s in p:
            s.settle()
    pos = [[s for s in p if s.items] for p in chain]
    keep = [i for i, p in enumerate(pos) if p]
    pos = [pos[i] for i in keep]
    lk = []
    for a, b in zip(keep, keep[1:]):
        lk.append(max(links[a:b]) if b > a else 0)
    firsts = [max(s.first for s in p) for p in pos]
    lasts = [max(s.last for s in p) for p in pos]
    best = None
    for i, p in enumerate(pos):
        lead = sum(firsts[:i]) + sum(lk[:i])
        tail = sum(lasts[i + 1:]) + sum(lk[i:])
        for s in p:
            t = lead + s.busy + tail
            if best is None or t > best[0]:
                best = (t, i, s)
    if best is None:
        return PipeTime(0, "none", {}, {})
    t, i, s = best
    # rounds: the steady part as the sum over rounds of the slowest stage in each
    # Sibling stages (aiv0.mte2, aiv1.mte2: units sharing the work) count as their mean in a round.
    allst = [x for p in pos for x in p]
    sib: dict[str, list[Stage]] = defaultdict(list)
    for x in allst:
        sib[re.sub(r"\d+\.", ".", x.key)].append(x)
    won: dict[str, float] = defaultdict(float)   # the steady part, attributed round by round
    steady = 0.0
    rounds = sorted({r for x in allst for r in x.rounds})
    for g in range(0, len(rounds), window):
        group = rounds[g:g + window]
        vals = {k_: sum(x.rounds.get(r, 0) for x in xs for r in group) / len(xs) for k_, xs in sib.items()}
        w = max(vals, key=vals.get)
        steady += vals[w]
        for r in group:
            v = sum(x.rounds.get(r, 0) for x in sib[w]) / len(sib[w])
            for k2, v2 in sib[w][0].split_round(r, v).items():
                won[k2] += v2
    if steady > s.busy:
        t += steady - s.busy
    elif s.couples:
        won = defaultdict(float)
        for r, v in s.rounds.items():
            for k2, v2 in s.split_round(r, v).items():
                won[k2] += v2
    else:
        won = s.split(s.busy)
    att: dict[str, float] = defaultdict(float)
    for j in range(i):
        att[max(pos[j], key=lambda x: x.first).key] += firsts[j]
    att["flag"] += sum(lk)
    for k2, v2 in won.items():
        att[k2] += v2
    for j in range(i + 1, len(pos)):
        att[max(pos[j], key=lambda x: x.last).key] += lasts[j]
    busy = {x.key: x.busy for p in pos for x in p}
    return PipeTime(t, s.key, dict(att), busy)


# ---- which reads hit L2 -------------------------------------------------------------------------------

def l2_replay(cfg: HardwareConfig, per_core: list, chunks: list, chunk_accesses: Callable,
              tile_accesses: Callable | None = None, before: Iterable = (), lanes: dict | None = None) -> set[tuple]:
    """The reads of a GEMM schedule that hit L2: its GM accesses replayed through the simulator's own L2
    (hw.memory.L2Cache: LRU, write-allocate, a workspace written in pieces and read whole) in lockstep
    order: round by round (the i-th tile of every core), K chunk by K chunk, core by core. Whether a tile
    read again later is still resident depends on everything read and written in between, which a rule
    like "hits if it fits" gets wrong both ways (a W larger than L2 is partly reused; a workspace re-read
    per row block is evicted when all cores' together exceed L2).

    chunk_accesses(core, i, tile, ka, kb) and tile_accesses(core, i, tile) (after the tile's chunks)
    yield (tag, key, nbytes, write); `before` holds (key, nbytes) written before the first round;
    lanes[tag]: the units of a core that take a tag's chunks in turn (a core's AIVs), among which shared
    misses rotate separately (_rotate_misses). Returns {(core, i, ka, tag)} of the reads that hit (ka is
    None for tile accesses)."""
    cache = L2Cache(cfg.l2.capacity_bytes)  # the simulator's cache policy, not a copy of it
    hits: set[tuple] = set()
    turn: dict[tuple, int] = defaultdict(int)
    for key, nbytes in before:
        cache.fill(key, nbytes, "", dirty=True)
    for i in range(max(len(ct) for ct in per_core)):
        live = [(core, ct[i]) for core, ct in enumerate(per_core) if i < len(ct)]
        for j, (ka, kb) in enumerate(chunks):
            readers: dict[tuple, list] = defaultdict(list)
            for core, tile in live:
                _replay_accesses(cache, hits, core, i, ka, chunk_accesses(core, i, tile, ka, kb), readers)
            _rotate_misses(hits, i, ka, readers, turn, i * len(chunks) + j, lanes or {})
        if tile_accesses is not None:
            for core, tile in live:
                _replay_accesses(cache, hits, core, i, None, tile_accesses(core, i, tile))
    return hits


def _rotate_misses(hits: set, i, ka, readers: dict, turn: dict, step: int, lanes: dict) -> None:
    """Hand the one miss of a block that several cores read in the same step to its readers in turn.
    Whichever core arrives first misses, and its HBM read puts it behind the others, so in the simulation
    the misses of a shared block rotate among its readers; lockstep order would charge them all to the
    lowest core and make it the slowest by the whole group's misses (docs/formulas.md, section 1). Where
    a core's units take the chunks in turn (lanes), the rotation runs per unit: alternating over chunks
    that alternate over a core's two AIVs would hand one core's misses all to one AIV."""
    for (tag, _), cores in readers.items():
        missed = [c for c in cores if (c, i, ka, tag) not in hits]
        if len(cores) < 2 or len(missed) != 1:
            continue
        group = (tag, tuple(cores), step % lanes.get(tag, 1))
        pay = cores[turn[group] % len(cores)]
        turn[group] += 1
        hits.add((missed[0], i, ka, tag))
        hits.discard((pay, i, ka, tag))


def l2_replay_timed(cfg: HardwareConfig, events: list) -> set[tuple]:
    """l2_replay for schedules whose units do not move in lockstep: `events` are (time, core, i, ka,
    accesses), replayed in time order (ties: in the order given)."""
    cache = L2Cache(cfg.l2.capacity_bytes)
    hits: set[tuple] = set()
    for _, core, i, ka, accesses in sorted(events, key=itemgetter(0)):
        _replay_accesses(cache, hits, core, i, ka, accesses)
    return hits


def _replay_accesses(cache: L2Cache, hits: set, core, i, ka, accesses, readers: dict | None = None) -> None:
    for tag, key, nbytes, write in accesses:
        if write:
            cache.fill(key, nbytes, "", dirty=True)
            continue
        if readers is not None:
            readers[(tag, key)].append(core)
        if cache.read(key):
            hits.add((core, i, ka, tag))
        else:
            cache.fill(key, nbytes, "", dirty=False)


# ---- traffic ledger -------------------------------------------------------------------------------

@dataclass
class Traffic:
    """GM bytes by role, counted from the schedule: `read` / `write` are what the kernel moves; `hbm_read`
    is the timing assumption of which reads miss L2 (the bytes counted are exact, the level is not: a
    read may be served by L2 or HBM, so the simulated HBM reads lie in [0, read] with L2 on)."""
    read: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    write: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hbm_read: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dirty: int = 0  # bytes of distinct GM regions written: what the L2 must hold dirty or write back

    def rd(self, role: Role, nbytes: int, hit: bool, n: int = 1) -> None:
        self.read[role.value] += nbytes * n
        if not hit:
            self.hbm_read[role.value] += nbytes * n

    def wr(self, role: Role, nbytes: int, n: int = 1, fresh: bool = True) -> None:
        """`fresh`: the write goes to a region not written before (a ring slot rewritten is not)."""
        self.write[role.value] += nbytes * n
        if fresh:
            self.dirty += nbytes * n

    def by_role(self, l2_enabled: bool) -> dict[str, dict]:
        """Per role: GM bytes read/written, and the ranges of HBM bytes the model allows."""
        out = {}
        for r in ROLES:
            rd, wr = self.read.get(r, 0), self.write.get(r, 0)
            if not rd and not wr:
                continue
            if l2_enabled:
                out[r] = {"read_bytes": rd, "write_bytes": wr, "hbm_read_bytes": [0, rd],
                          "hbm_write_bytes": [0, wr], "hbm_read_bytes_expected": self.hbm_read.get(r, 0)}
            else:
                out[r] = {"read_bytes": rd, "write_bytes": wr, "hbm_read_bytes": [rd, rd],
                          "hbm_write_bytes": [wr, wr], "hbm_read_bytes_expected": rd}
        return out


@dataclass
class ModelResult:
    kernel: str
    method: str
    hw: str
    shape: dict
    cycles: int
    bound: str                  # resource group (GROUPS) with the most cycles on the binding path
    bound_stage: str            # the binding stage key (aic.cube, aiv.vector, hbm, aic.mte2, ...)
    attribution: dict[str, int]  # group -> cycles on the binding path (sums to `cycles`)
    phases: dict[str, dict]     # phase name -> {"cycles", "bound_stage", "busy": {stage: cycles}}
    traffic: dict[str, dict]    # Traffic.by_role
    read_bytes: int
    write_bytes: int
    hbm_bytes_expected: int     # HBM reads assumed for timing + HBM writes (L2 off) / flushed writes (L2 on)
    tiles_per_core: int         # output tiles on the binding core
    steady_items: int           # K-chunk iterations (tile x chunk) on the binding core
    core: int
    plan: dict = field(default_factory=dict)   # tiling and schedule choices, as the builder's graph.meta names them
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def l2_writeback_cycles(cfg: HardwareConfig, cycles: float, dirty_bytes: int, hbm_read_bytes: int) -> float:
    """Cycles a kernel loses when it writes more distinct GM bytes than L2 holds (docs/formulas.md, "L2
    write-back"). Written lines stay dirty in L2 until evicted; once L2 is full (after C x T0 / D cycles at
    the kernel's own pace) every further dirty byte evicts one, and the evicted lines and the remaining HBM
    reads must share HBM bandwidth:  T = C T0 / D + (D - C + H (1 - C / D)) / BW.  Returns max(0, T - T0)."""
    cap = cfg.l2.capacity_bytes
    if not cfg.l2.enabled or dirty_bytes <= cap or cycles <= 0:
        return 0.0
    fill = cap / dirty_bytes
    t = fill * cycles + (dirty_bytes - cap + hbm_read_bytes * (1 - fill)) / cfg.hbm_bytes_per_cycle
    return max(0.0, t - cycles)


def finish(kernel: str, method: str, cfg: HardwareConfig, shape: dict, phases: list[tuple[str, PipeTime]],
           traffic: Traffic, *, tiles: int, items: int, core: int, plan: dict | None = None,
           notes: list[str] | None = None) -> ModelResult:
    total = sum(p.cycles for _, p in phases)
    spill = l2_writeback_cycles(cfg, total, traffic.dirty, sum(traffic.hbm_read.values()))
    if spill > 0:
        phases = phases + [("l2_writeback", PipeTime(spill, "hbm", {"hbm": spill}, {"hbm": spill}))]
        total += spill
    att: dict[str, float] = defaultdict(float)
    for _, p in phases:
        for k, v in p.attribution.items():
            att[group_of(k)] += v
    att_i = {k: int(round(v)) for k, v in att.items() if v}
    # the binding stage: that of the phase contributing most cycles
    name, main = max(phases, key=lambda x: x[1].cycles)
    rd = sum(traffic.read.values())
    wr = sum(traffic.write.values())
    hbm = sum(traffic.hbm_read.values()) + wr if cfg.l2.enabled else rd + wr
    return ModelResult(kernel=kernel, method=method, hw=cfg.meta.name, shape=shape, cycles=int(ceil(total)),
                       bound=leader(att_i), bound_stage=main.bound, attribution=att_i,
                       phases={n: {"cycles": int(ceil(p.cycles)), "bound_stage": p.bound,
                                   "busy": {k: int(round(v)) for k, v in p.busy.items()}} for n, p in phases},
                       traffic=traffic.by_role(cfg.l2.enabled), read_bytes=rd, write_bytes=wr,
                       hbm_bytes_expected=hbm, tiles_per_core=tiles, steady_items=items, core=core,
                       plan=plan or {}, notes=notes or [])


# ---- registry ---------------------------------------------------------------------------------------

MODELS: dict[tuple[str, str], Callable[..., ModelResult]] = {}


def register(kernel: str, method: str):
    def deco(fn):
        MODELS[(kernel, method)] = fn
        return fn
    return deco


def model_for(kernel: str, method: str) -> Callable[..., ModelResult]:
    import npusim.model.attention  # noqa: F401  (registers the attention models)
    import npusim.model.gemm  # noqa: F401  (registers the GEMM models)
    fn = MODELS.get((kernel, method))
    if fn is None:
        known = ", ".join(f"{k}/{m}" for k, m in sorted(MODELS))
        raise NpusimError(f"no closed-form model for {kernel} --method {method} (models: {known})")
    return fn
