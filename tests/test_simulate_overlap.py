"""simulate() with numerics makes the inputs beside the timing and the reference beside the replay, in
forked children (npusim/sim/helpers.py): the verdict is the same as one after the other, and errors still
reach the user."""

import numpy as np
import pytest

import npusim.sim.helpers as helpers
import npusim.sim.run as run
from npusim.errors import GraphError
from npusim.hw.datapath import Datapath
from npusim.kernels.attention.build import build_attention
from npusim.kernels.gemm.quant import build_gemm


def _verdict(res):
    v = res.numerics
    return v.exact, v.mismatches, v.elements, v.rel_l2_vs_fp64, v.max_abs_vs_fp64


@pytest.mark.parametrize("method", ["dequant", "msd"])
def test_forked_reference_gives_the_same_verdict(cfg910, monkeypatch, method):
    _fork_anyway(monkeypatch)
    g = build_gemm(cfg910, 16, 512, 256, method=method, weights="int8")
    children = []
    real = run.ForkedReference.__init__

    def spy(self, *a):
        real(self, *a)
        children.append(self.proc is not None)

    monkeypatch.setattr(run.ForkedReference, "__init__", spy)
    forked = run.simulate(g, cfg910, seed=3)
    assert children == [True]  # the reference child ran
    monkeypatch.setattr(helpers, "_FORK", None)
    inline = run.simulate(g, cfg910, seed=3)
    assert forked.numerics.exact and _verdict(forked) == _verdict(inline)
    assert forked.cycles == inline.cycles


def test_reference_error_in_the_child_reaches_the_parent(cfg910):
    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
    g.reference = dict(g.reference, fn="no_such_reference")
    with pytest.raises(GraphError, match="unknown reference 'no_such_reference'"):
        run.simulate(g, cfg910)


def test_reference_inputs_written_by_the_graph_are_not_forked(cfg910):
    """A graph that writes a tensor its reference reads: the reference must see the tensor as the replay
    left it, so it is computed after the replay in the parent."""
    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
    assert run._inputs_read_only(g)
    writes = [op for op in g.ops if op.gm is not None and op.path.writes_gm]
    g.reference = dict(g.reference, inputs=[writes[0].gm.tensor, *g.reference["inputs"][1:]])
    assert not run._inputs_read_only(g)
    assert run.ForkedReference(g, {}).proc is None


def test_daemonic_process_computes_the_reference_itself(cfg910, monkeypatch):
    """Dask's workers are daemonic processes, which may not have children."""
    import multiprocessing as mp

    monkeypatch.setattr(mp.current_process(), "_config", dict(mp.current_process()._config, daemon=True))
    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
    assert run.ForkedReference(g, {}).proc is None


def test_one_thread_runs_one_after_the_other(cfg910, monkeypatch):
    """NPUSIM_THREADS=1: no input thread, no reference child, no split passes; the same verdict."""
    g = build_gemm(cfg910, 16, 512, 256, method="dequant", weights="int8")
    both = run.simulate(g, cfg910, seed=2)
    monkeypatch.setenv("NPUSIM_THREADS", "1")
    assert run.ForkedReference(g, {}).proc is None
    one = run.simulate(g, cfg910, seed=2)
    assert _verdict(one) == _verdict(both) and one.numerics.exact


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_thread_budget_is_refused(cfg910, monkeypatch, bad):
    from npusim.errors import NpusimError

    monkeypatch.setenv("NPUSIM_THREADS", bad)
    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
    with pytest.raises(NpusimError, match=r"NPUSIM_THREADS=.*: set it to a positive integer"):
        run.simulate(g, cfg910)


def test_no_fork_while_another_thread_runs(cfg910):
    """A progress bar's refresh thread could hold a lock the forked child would need."""
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
        assert run.ForkedReference(g, {}).proc is None
        assert run.simulate(g, cfg910).numerics.exact
    finally:
        stop.set()
        t.join()


def test_reference_error_keeps_its_traceback(cfg910, monkeypatch):
    """The child only says that it failed; the parent computes the reference again and raises with the
    real traceback (a bug in a reference is a bug, not a user error)."""
    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("inside the reference")

    monkeypatch.setitem(run.REFERENCES, g.reference["fn"], broken)
    with pytest.raises(ZeroDivisionError, match="inside the reference") as err:
        run.simulate(g, cfg910)
    assert any(tb.name == "broken" for tb in err.traceback)


def _graphs(cfg):
    return [build_gemm(cfg, 16, 512, 256, method="dequant", weights="int8"),
            build_gemm(cfg, 16, 256, 512, method="dequant", weights="int8-g128"),
            build_attention(cfg, batch=2, q_heads=8, kv_heads=2, q_len=1, kv_len=300, head_dim=64, method="msd")]


def _fork_anyway(monkeypatch):
    """Fork even if an earlier test left a thread running (a Dask client's, say); not with one thread."""
    import npusim.workloads.step as step
    from npusim.numerics.parallel import threads

    for mod in (helpers, step, run):
        monkeypatch.setattr(mod, "fork_context", lambda: helpers._FORK if threads() > 1 else None)


def test_inputs_made_in_a_child_are_the_inputs(cfg910, monkeypatch):
    """The forked child fills shared memory with exactly the arrays the parent would make."""
    _fork_anyway(monkeypatch)
    for g in _graphs(cfg910):
        ahead = helpers.InputsAhead(g, seed=4)
        assert ahead.proc is not None and ahead.shared
        made, want = ahead.result().gm, Datapath(g, 4).gm
        assert ahead.from_child  # the child's arrays, not the parent's fallback
        assert all(made[name] is arr for name, arr in ahead.shared.items())
        assert made.keys() == want.keys()
        for name, a in want.items():
            assert made[name].dtype == a.dtype and made[name].shape == a.shape, name
            assert np.array_equal(made[name].view(np.uint8), a.view(np.uint8)), name


def test_inputs_error_in_the_child_is_raised_by_the_parent(cfg910, monkeypatch):
    _fork_anyway(monkeypatch)
    g = build_gemm(cfg910, 16, 256, 256, method="dequant", weights="int8")
    import dataclasses
    g.tensors["x"] = dataclasses.replace(g.tensors["x"], init={"kind": "no_such_init"})
    ahead = helpers.InputsAhead(g, seed=0)
    assert ahead.proc is not None
    with pytest.raises(GraphError, match="unknown init kind 'no_such_init'"):
        ahead.result()


def test_inputs_for_another_graph_are_refused(cfg910):
    g, h = _graphs(cfg910)[:2]
    ahead = helpers.InputsAhead(h, seed=0)
    with pytest.raises(GraphError, match="inputs given were started for graph"):
        run.simulate(g, cfg910, inputs=ahead)
    assert ahead.proc is None  # its child, if any, did not outlive the failed run


def test_failed_fork_falls_back(cfg910, monkeypatch):
    """No memory or no process slot for the child: the work is done in the parent, same results."""
    _fork_anyway(monkeypatch)

    def no_fork(self):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(helpers._FORK.Process, "start", no_fork)
    g = _graphs(cfg910)[0]
    ahead = helpers.InputsAhead(g, seed=1, thread=False)
    assert ahead.proc is None and ahead.conn is None and not ahead.shared
    assert np.array_equal(ahead.result().gm["wq"], Datapath(g, 1).gm["wq"]) and not ahead.from_child
    assert run.ForkedReference(g, Datapath(g, 1).gm).proc is None
    assert run.simulate(g, cfg910, seed=1).numerics.exact


def test_no_inputs_child_while_another_thread_runs(cfg910):
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        g = _graphs(cfg910)[0]
        ahead = helpers.InputsAhead(g, seed=1, thread=False)
        assert ahead.proc is None and ahead.thread is None
        assert np.array_equal(ahead.result().gm["wq"], Datapath(g, 1).gm["wq"])
    finally:
        stop.set()
        t.join()


def test_step_with_the_next_inputs_ahead_is_the_step_one_after_the_other(cfg910, monkeypatch):
    """run_step makes the next kernel's inputs while this one replays: same cycles and verdicts as with
    NPUSIM_THREADS=1 (everything in order, in one process)."""
    from npusim.workloads.load import load_workload
    from npusim.workloads.step import run_step

    import npusim.workloads.step as step

    _fork_anyway(monkeypatch)
    given = []   # per kernel: simulate() got its inputs made ahead, by a child that answered

    def spy(graph, cfg, **kw):
        res = run.simulate(graph, cfg, **kw)
        given.append(kw.get("inputs") is not None and kw["inputs"].from_child)
        return res

    monkeypatch.setattr(step, "simulate", spy)
    wl = load_workload("llama-3.1-8b")
    ahead = run_step(cfg910, wl, "decode_b1", "dequant", layers=1, numerics=True, seed=5)
    kernels = ahead["kernels_simulated"]
    assert len(given) == kernels and given == [False] + [True] * (kernels - 1)
    monkeypatch.setenv("NPUSIM_THREADS", "1")
    serial = run_step(cfg910, wl, "decode_b1", "dequant", layers=1, numerics=True, seed=5)
    assert ahead["exact"] and serial["exact"]
    assert ahead["cycles"] == serial["cycles"] and ahead["kernels"] == serial["kernels"]
