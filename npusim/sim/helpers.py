"""Work that simulate() runs beside the timing and the replay, in helper processes: a graph's inputs, and
(npusim/sim/run.py) its reference output.

Threads do not suit either. The timing and the replay are Python-bound and hold the GIL; a thread making
inputs takes it back after every numpy call, and the two slow each other down (a 70B decode layer ran
39 s with the next kernel's inputs on a thread beside the replay, against 31 s with none). A forked
child shares nothing but the pages it was forked with, so the parent pre-allocates the inputs in shared
memory (anonymous MAP_SHARED mmaps) and the child fills them: nothing is pickled or copied back.

Forking is safe only where no other Python thread runs (a progress bar's or a Dask worker's could hold a
lock the child then waits on forever), on Linux, outside daemonic processes (a Dask worker's may not have
children), and with more than one numerics thread allowed (NPUSIM_THREADS=1 asks for one core). Elsewhere,
or when the fork itself fails (no memory, no process slot), the inputs are made on a thread beside the
timing (or in the caller with NPUSIM_THREADS=1) and the reference after the replay: same results.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import sys
import threading

import numpy as np

from npusim.graph.kernel_graph import KernelGraph
from npusim.hw.datapath import Datapath, Inputs
from npusim.numerics.dtypes import np_dtype
from npusim.numerics.parallel import threads

_FORK = mp.get_context("fork") if sys.platform == "linux" else None
# Helpers run at a lower priority (a larger nice value): the parent's timing and replay are the critical
# path and one thread each, so they keep a core, and the helpers take what is left (on an otherwise idle
# machine, all of it whenever the parent waits for them; beside other work at nice 0, little). At equal
# priority, the parent, an inputs child and a reference child share 2 cores three ways, and the 70B decode
# layer took 34.7 s instead of 31.5 s.
HELPER_NICE = 10


def lower_priority() -> None:
    """In a helper process: step back for the parent (see HELPER_NICE)."""
    try:
        os.nice(HELPER_NICE)
    except OSError:  # not permitted here: run at the parent's priority
        pass


def fork_context():
    """The multiprocessing fork context where forking a helper is safe now (see the module doc), else None."""
    if (_FORK is None or threading.active_count() != 1 or mp.current_process().daemon or threads() <= 1):
        return None
    return _FORK


def start_child(proc, conn, send) -> bool:
    """Start a helper process; False (its pipe closed) if the fork fails, e.g. for want of memory or of a
    process slot: the caller then does the work itself."""
    try:
        proc.start()
    except OSError:
        conn.close()
        send.close()
        return False
    send.close()
    return True


def _generated(graph: KernelGraph) -> list[str]:
    """Tensors whose contents are made (random, quantized, ...), not zeros."""
    return [name for name, t in graph.tensors.items() if t.init and t.init.get("kind", "zeros") != "zeros"]


class InputsAhead:
    """Datapath(graph, seed), made from now on by a forked child into shared memory; result() waits for it.
    Where forking is not safe, on a thread (numpy releases the GIL in its loops; better than nothing beside
    the timing, whose Python it slows less than the replay's) if `thread` and threads() > 1, else in the
    caller by result(). A failed child is not trusted: the caller makes the inputs itself, which raises
    the same error with its own traceback."""

    def __init__(self, graph: KernelGraph, seed: int, *, thread: bool = True):
        self.graph, self.seed = graph, seed
        self.proc = self.conn = self.thread = None
        self.shared: dict[str, np.ndarray] = {}
        self._made: list = []
        self._from_child = False
        ctx = fork_context()
        if ctx is None:
            if thread and threads() > 1:
                self._start_thread()
            return
        for name in _generated(graph):
            t = graph.tensors[name]
            dt = np_dtype(t.dtype)
            n = int(np.prod(t.shape)) * dt.itemsize
            buf = mmap.mmap(-1, n) if n else bytearray()
            self.shared[name] = np.frombuffer(buf, dtype=dt).reshape(t.shape)
        self.conn, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_make_inputs, args=(graph, seed, self.shared, send), daemon=True)
        if start_child(proc, self.conn, send):
            self.proc = proc
        else:
            self.conn, self.shared = None, {}
            if thread and threads() > 1:
                self._start_thread()

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._make, name="npusim-inputs", daemon=True)
        self.thread.start()

    @property
    def from_child(self) -> bool:
        """True once result() has returned the child's arrays (the shared ones), not a fallback's."""
        return self._from_child

    def _make(self) -> None:
        try:
            self._made.append(Datapath(self.graph, self.seed))
        except BaseException as exc:  # noqa: BLE001  (raised in the caller by result())
            self._made.append(exc)

    def cancel(self) -> None:
        """Stop making the inputs (the caller failed or was interrupted): kill the child, or let the
        thread finish (a daemon: it cannot keep the process alive)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.conn.close()
            self.proc = None
            self.shared = {}   # the mmaps go with their arrays, even if a traceback keeps this object

    def result(self) -> Datapath:
        if self.thread is not None:
            self.thread.join()  # no thread may be left running when the reference child is forked
            self.thread = None
            made = self._made.pop()
            if isinstance(made, BaseException):
                raise made
            return made
        if self.proc is None:
            return Datapath(self.graph, self.seed)
        try:
            ok = self.conn.recv() == "ok"
        except Exception:  # noqa: BLE001  (EOF: the child died, e.g. out of memory)
            ok = False
        except BaseException:  # Ctrl-C: do not wait for the child
            self.cancel()
            raise
        self.conn.close()
        self.proc.join()
        self.proc = None
        if not ok:
            return Datapath(self.graph, self.seed)
        self._from_child = True
        inputs = Inputs(self.seed)
        gm = {name: self.shared[name] if name in self.shared else inputs.tensor(t)
              for name, t in self.graph.tensors.items()}
        return Datapath(self.graph, self.seed, gm)


def _make_inputs(graph: KernelGraph, seed: int, shared: dict[str, np.ndarray], conn) -> None:
    lower_priority()
    try:
        inputs = Inputs(seed)
        for name, out in shared.items():
            a = inputs.tensor(graph.tensors[name])
            if a.shape != out.shape:  # copyto would broadcast it
                raise ValueError(f"{name}: made {a.shape}, declared {out.shape}")
            np.copyto(out, a, casting="no")
        conn.send("ok")
    except BaseException:  # noqa: BLE001  (the parent makes the inputs itself, and raises with a traceback)
        conn.send("error")
    finally:
        conn.close()
