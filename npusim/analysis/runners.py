"""Where sweep points run: in this process, on a local process pool, or on a Dask cluster.

A runner takes the points to compute and yields (seq, row) as points finish, in any order; the sweep
sorts rows by seq. A worker that dies yields an error row for its point instead of ending the sweep.
(npusim.analysis.sweep imports this module, so its run_point is imported inside the methods.)
"""

from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from npusim.errors import NpusimError

if TYPE_CHECKING:
    from npusim.analysis.sweep import Point
    from npusim.analysis.table import Row


_ADDRESS = re.compile(r"(tcp|tls|ws|wss|ucx)://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):[0-9]{1,5}/?")


class Runner(Protocol):
    def run(self, points: list[Point]) -> Iterator[tuple[int, Row]]: ...


class SerialRunner:
    """Every point in this process, in order (--jobs 1)."""

    def run(self, points: list[Point]) -> Iterator[tuple[int, Row]]:
        from npusim.analysis.sweep import run_point
        for p in points:
            yield p.seq, run_point(p)


class PoolRunner:
    """A local process pool of `jobs` workers. Workers are spawned, not forked: the parent runs a
    progress-bar thread, and forking a process with threads can deadlock the child."""

    def __init__(self, jobs: int):
        if jobs < 1:
            raise NpusimError(f"--jobs {jobs}: needs at least 1 worker")
        self.jobs = jobs

    def run(self, points: list[Point]) -> Iterator[tuple[int, Row]]:
        from npusim.analysis.sweep import lost_row, run_point
        if not points:
            return
        pool = ProcessPoolExecutor(min(self.jobs, len(points)), mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(run_point, p): p for p in points}
            for f in as_completed(futures):
                p = futures[f]
                try:
                    row = f.result()
                except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool: record, go on
                    row = lost_row(p, exc)
                yield p.seq, row
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner:
    """An existing Dask distributed cluster, by scheduler address, or an open `distributed.Client`
    (which the caller keeps and closes). Every worker needs npusim installed (the same version)."""

    def __init__(self, scheduler: str | None = None, client: Any = None, timeout_s: float = 10.0):
        if (scheduler is None) == (client is None):
            raise ValueError("DaskRunner needs a scheduler address or a client")
        # Checked here: a Client given a malformed address fails late and noisily (at interpreter exit).
        if scheduler is not None and not _ADDRESS.fullmatch(scheduler):
            raise NpusimError(f"--scheduler {scheduler}: expected a Dask scheduler address such as tcp://HOST:8786")
        self.scheduler, self.client, self.timeout_s = scheduler, client, timeout_s
        self._owned: Any = None  # a client this runner opened, closed after the run

    def connect(self) -> Any:
        """The client, connecting to the scheduler on first use (call early to fail before any work)."""
        if self.client is not None:
            return self.client
        if self._owned is None:
            try:
                from distributed import Client
            except ImportError:
                raise NpusimError("--scheduler needs Dask: pip install \"dask[distributed]\"") from None
            try:
                self._owned = Client(self.scheduler, timeout=self.timeout_s, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise NpusimError(f"--scheduler {self.scheduler}: cannot connect ({exc})") from None
        return self._owned

    def run(self, points: list[Point]) -> Iterator[tuple[int, Row]]:
        from npusim.analysis.sweep import lost_row, run_point
        if not points:
            self._close()
            return
        from distributed import as_completed as dask_completed
        client = self.connect()
        futures = []
        try:
            # pure=False: a point re-run after a failure must not be served a cached failed result.
            futures = client.map(run_point, points, pure=False)
            by_key = {f.key: p for f, p in zip(futures, points)}
            for f in dask_completed(futures, loop=client.loop):  # not the default client: we set none
                p = by_key[f.key]
                try:
                    row = f.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker or a missing npusim there
                    row = lost_row(p, exc)
                yield p.seq, row
        finally:
            client.cancel([f for f in futures if not f.done()])
            self._close()

    def _close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None
