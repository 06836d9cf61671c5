"""simulate() with numerics runs the inputs beside the timing (a thread) and the reference beside the
replay (a forked child): the verdict is the same as one after the other, and errors still reach the user."""

import pytest

import npusim.sim.run as run
from npusim.errors import GraphError
from npusim.kernels.gemm.quant import build_gemm


def _verdict(res):
    v = res.numerics
    return v.exact, v.mismatches, v.elements, v.rel_l2_vs_fp64, v.max_abs_vs_fp64


@pytest.mark.parametrize("method", ["dequant", "msd"])
def test_forked_reference_gives_the_same_verdict(cfg910, monkeypatch, method):
    g = build_gemm(cfg910, 16, 512, 256, method=method, weights="int8")
    forked = run.simulate(g, cfg910, seed=3)
    assert run._FORK is not None  # Linux: the child ran
    monkeypatch.setattr(run, "_FORK", None)
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
