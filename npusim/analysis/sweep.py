"""`npusim sweep`: run a kernel over a grid of kernel options and config fields, one CSV row per point.

The parent plans every point (resolving each config once, so an invalid value becomes that point's
error row and the methods come from the point's own config), then hands the points to a runner: serial,
a local process pool, or a Dask cluster. Workers receive the resolved config data, not a file name, so a
remote worker needs npusim but none of the local files. Rows are strings fixed by the point alone
(`wall_s`, the one non-deterministic run field, is left out), and the file is written sorted by point,
so the result does not depend on the runner or the completion order.

Resume: rows already in the output file that ran without error are kept and not recomputed; rows with
an error are retried (a worker lost mid-run is not a property of the point).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from npusim.analysis.flatten import flatten
from npusim.analysis.grid import Axis, grid_points, option_value
from npusim.analysis.runners import Runner
from npusim.analysis.table import ERROR, IDENTITY, Row, cell, read_rows, write_rows
from npusim.config.load import load_config
from npusim.config.schema import HardwareConfig
from npusim.errors import NpusimError
from npusim.kernels import registry
from npusim.report.run_report import run_json
from npusim.sim.run import simulate

# Run JSON fields that are not per-point scalars: duplicates of identity columns, the wall clock,
# and the cause breakdowns (per trace: `npusim inspect`).
_DROPPED = ("kernel", "hw", "seed", "wall_s", "critical_path")


@dataclass(frozen=True)
class SweepSpec:
    kernel: str
    axes: tuple[Axis, ...]
    hw: str = "910b"
    overrides: tuple[str, ...] = ()
    methods: tuple[str, ...] | None = None  # None: every method the point's config supports
    seed: int = 0
    numerics: bool = False

    @property
    def axis_columns(self) -> list[str]:
        return [a.column for a in self.axes]


@dataclass
class Point:
    """One row to compute. `cells` are its identity, grid, option and config columns, known up front."""

    seq: int  # position in the file
    index: int  # grid point number (several methods share one)
    kernel: str
    method: str
    options: dict[str, Any]
    config: dict[str, Any] | None  # resolved config data; None when the point's config is invalid
    seed: int
    numerics: bool
    cells: Row = field(default_factory=dict)
    error: str = ""  # known before running: invalid config value, unsupported method


def one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _point_config(spec: SweepSpec, combo: tuple[str, ...]) -> HardwareConfig:
    grid = [f"{a.name}={v}" for a, v in zip(spec.axes, combo) if a.is_config]
    return load_config(spec.hw, [*spec.overrides, *grid])


def _base_cells(spec: SweepSpec, defaults: dict[str, Any], index: int, combo: tuple[str, ...],
                options: dict[str, Any]) -> Row:
    """Identity, grid and option cells of a grid point (all but the method)."""
    return {"point": str(index), "kernel": spec.kernel, "hw": spec.hw, "overrides": "; ".join(spec.overrides),
            "seed": str(spec.seed), "check_numerics": cell(spec.numerics),
            **{a.column: v for a, v in zip(spec.axes, combo)},
            **{f"opt.{k}": cell(v) for k, v in {**defaults, **options}.items() if k != "method"}}


def plan(spec: SweepSpec) -> list[Point]:
    """Every row of the sweep, in file order. The base config (--hw, --set) must be valid."""
    kernel = registry.kernel(spec.kernel)
    load_config(spec.hw, spec.overrides)
    configs: dict[tuple[str, ...], HardwareConfig | str] = {}  # by the config axes' values: load each once
    points: list[Point] = []
    for index, combo in enumerate(grid_points(spec.axes)):
        config_key = tuple(v for a, v in zip(spec.axes, combo) if a.is_config)
        if config_key not in configs:
            try:
                configs[config_key] = _point_config(spec, combo)
            except NpusimError as exc:
                configs[config_key] = one_line(str(exc))
        cfg = configs[config_key]
        options = {a.name: option_value(v) for a, v in zip(spec.axes, combo) if not a.is_config}
        base = _base_cells(spec, kernel.defaults, index, combo, options)

        def add(method: str, data: dict[str, Any] | None, cells: Row, error: str) -> None:
            points.append(Point(len(points), index, spec.kernel, method, options, data, spec.seed,
                                spec.numerics, {**base, "method": method, **cells}, error))

        if isinstance(cfg, str):  # the config itself is invalid: one error row per requested method
            for method in spec.methods or ("",):
                add(method, None, {}, cfg)
            continue
        supported = kernel.methods(cfg)
        config_cells = {f"config.{k}": cell(v) for k, v in flatten(cfg.to_data()).items()}
        for method in spec.methods or supported:
            error = "" if method in supported else (f"method {method!r} is not supported by {spec.kernel} "
                                                    f"on this config (supported: {', '.join(supported)})")
            add(method, cfg.to_data(), config_cells, error)
    return points


def result_cells(doc: dict[str, Any]) -> Row:
    doc = {k: v for k, v in doc.items() if k not in _DROPPED and not (k == "numerics" and v is None)}
    flat = flatten(doc)
    return {k: cell(v) for k, v in flat.items() if ".waiting_on." not in k and not k.endswith(".waiting_on")}


def run_point(point: Point) -> Row:
    """Simulate one point and return its row. Never raises: a failure is the row's error cell."""
    row = {**point.cells, ERROR: point.error}
    if point.error:
        return row
    try:
        cfg = HardwareConfig.model_validate(point.config)
        graph = registry.build(point.kernel, cfg, {**point.options, "method": point.method})
        res = simulate(graph, cfg, seed=point.seed, numerics=point.numerics)
        row.update(result_cells(run_json(res)))
    except NpusimError as exc:
        row[ERROR] = one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken point must not end a sweep of thousands
        row[ERROR] = one_line(f"internal error: {type(exc).__name__}: {exc}")
    return row


def lost_row(point: Point, exc: BaseException) -> Row:
    """The row of a point whose worker failed (process killed, cluster lost, npusim missing there)."""
    return {**point.cells, ERROR: one_line(f"worker failed: {type(exc).__name__}: {exc}")}


def _key(row: Row, axis_columns: list[str]) -> tuple[str, ...]:
    return tuple(row.get(c, "") for c in (*IDENTITY[1:], *axis_columns))


def resumable(path: Path, spec: SweepSpec, points: list[Point]) -> dict[int, Row]:
    """Rows of an earlier run of this sweep in `path` that finished without error, by seq."""
    if not path.exists():
        return {}
    rows = read_rows(path)
    axis_columns = spec.axis_columns
    if rows:
        theirs = [c for c in rows[0] if c.startswith("grid.")]
        if sorted(theirs) != sorted(axis_columns):
            raise NpusimError(f"{path} holds a sweep over {', '.join(c[5:] for c in theirs) or 'nothing'}, "
                              f"not over {', '.join(a.name for a in spec.axes)}: write to another file")
    by_key = {_key(p.cells, axis_columns): p for p in points}
    done: dict[int, Row] = {}
    for row in rows:
        p = by_key.get(_key(row, axis_columns))
        if p is None:
            raise NpusimError(f"{path} holds row(s) that are not points of this sweep (e.g. point "
                              f"{row['point']}, method {row['method'] or '-'}; different --hw, --set, "
                              f"--seed or grid values?): write to another file")
        if not row[ERROR]:
            done[p.seq] = {**row, "point": p.cells["point"]}
    return done


@dataclass(frozen=True)
class SweepOutcome:
    rows: list[Row]
    ran: int
    resumed: int
    failed: int


@dataclass
class Prepared:
    """A sweep checked and ready: its points, and the rows already done (by seq) in the output file."""

    spec: SweepSpec
    out: Path
    points: list[Point]
    done: dict[int, Row]

    @property
    def todo(self) -> list[Point]:
        return [p for p in self.points if p.seq not in self.done]

    def save(self) -> None:
        # The whole file is rewritten atomically, rows sorted by point: a crash leaves a readable file.
        write_rows(self.out, [self.done[s] for s in sorted(self.done)], self.spec.axis_columns)


Progress = Callable[[int, int], None]  # (points finished so far in this run, points to run)


def prepare(spec: SweepSpec, out: str | Path) -> Prepared:
    """Check everything a user can get wrong (grid, base config, output file, a resumed file from
    another sweep) before any point runs, and write the output file once."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise NpusimError(f"-o {out}: the sweep output must be a .csv file")
    _check_writable(out)  # now, not after the first hour of simulation
    points = plan(spec)
    return Prepared(spec, out, points, resumable(out, spec, points))


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise NpusimError(f"-o {out}: is a directory, not a file")
    if not parent.is_dir():
        raise NpusimError(f"-o {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise NpusimError(f"-o {out}: folder {parent} is not writable")


def execute(prepared: Prepared, runner: Runner, progress: Progress | None = None,
            save_every_s: float = 2.0) -> SweepOutcome:
    done, todo = prepared.done, prepared.todo
    resumed = len(done)
    progress = progress or (lambda _done, _total: None)
    progress(0, len(todo))
    last_save, finished = time.monotonic(), 0
    try:
        for seq, row in _all_rows(todo, runner):
            done[seq] = row
            finished += 1
            progress(finished, len(todo))
            if time.monotonic() - last_save >= save_every_s:
                prepared.save()
                last_save = time.monotonic()
    finally:
        if done:
            prepared.save()  # also when interrupted: every finished point is kept for the resume
    rows = [done[s] for s in sorted(done)]
    return SweepOutcome(rows, ran=finished, resumed=resumed, failed=sum(1 for r in rows if r[ERROR]))


def run_sweep(spec: SweepSpec, out: str | Path, runner: Runner, progress: Progress | None = None,
              save_every_s: float = 2.0) -> SweepOutcome:
    return execute(prepare(spec, out), runner, progress, save_every_s)


def _all_rows(todo: list[Point], runner: Runner) -> Iterator[tuple[int, Row]]:
    # Points that failed while planning need no worker.
    for p in todo:
        if p.error:
            yield p.seq, run_point(p)
    yield from runner.run([p for p in todo if not p.error])
