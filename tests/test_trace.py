import copy
import io
import json

import pytest

from npusim.kernels.gemm.native import build_gemm_native
from npusim.sim.run import simulate
from npusim.trace.chrome import save_trace, write_trace
from npusim.trace.validate import validate_trace


@pytest.fixture(scope="module")
def trace_doc(cfg910):
    g = build_gemm_native(cfg910, 40, 300, 100, cores=3)
    res = simulate(g, cfg910, seed=1)
    buf = io.StringIO()
    write_trace(buf, cfg910, g, res.records.ops, res.cycles, seed=1)
    return json.loads(buf.getvalue()), res


def test_trace_is_valid_and_complete(trace_doc):
    doc, res = trace_doc
    assert validate_trace(doc) == []
    evs = doc["traceEvents"]
    xs = [e for e in evs if e["ph"] == "X"]
    assert len(xs) == len(res.records.ops)
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"MTE2", "MTE1", "CUBE", "FIXP"}
    assert any(e["ph"] == "C" and "occupancy" in e["name"] for e in evs)
    assert any(e["ph"] == "C" and e["name"].startswith("HBM bandwidth") for e in evs)
    assert sum(e["ph"] == "s" for e in evs) == sum(e["ph"] == "f" for e in evs) > 0
    meta = doc["metadata"]
    assert meta["clock_hz"] == 1.8e9 and "1 cycle = 1 ns" in meta["time_base"]
    assert meta["config"]["chip"]["cores"] == 24 and meta["config"]["chip"]["clock"] == "1800000000 Hz"
    # ts are cycles / 1000
    first = min(xs, key=lambda e: e["ts"])
    assert first["ts"] == min(r.start for r in res.records.ops) / 1000
    assert max(e["ts"] + e["dur"] for e in xs) * 1000 == pytest.approx(res.cycles)


def _mutated(doc, fn):
    d = copy.deepcopy(doc)
    fn(d)
    return d


def test_validator_catches_each_defect(trace_doc):
    doc, _ = trace_doc
    evs = doc["traceEvents"]
    x_idx = [i for i, e in enumerate(evs) if e["ph"] == "X"]

    def overlap(d):
        a = d["traceEvents"][x_idx[0]]
        d["traceEvents"].append({**a, "name": "intruder", "ts": a["ts"] + a["dur"] / 2})

    def drop_finish(d):
        i = next(i for i, e in enumerate(d["traceEvents"]) if e["ph"] == "f")
        del d["traceEvents"][i]

    def unnamed_thread(d):
        d["traceEvents"] = [e for e in d["traceEvents"] if not (e["ph"] == "M" and e["name"] == "thread_name")]

    def missing_key(d):
        del d["traceEvents"][x_idx[1]]["dur"]

    def no_metadata(d):
        del d["metadata"]

    for fn, expected in ((overlap, "partially overlap"), (drop_finish, "1 starts and 0 ends"),
                         (unnamed_thread, "no thread_name"), (missing_key, "missing dur"),
                         (no_metadata, "metadata")):
        problems = validate_trace(_mutated(doc, fn))
        assert any(expected in p for p in problems), (fn.__name__, problems)


def test_trace_is_byte_identical_across_runs(cfg910, tmp_path):
    paths = []
    for i in range(2):
        g = build_gemm_native(cfg910, 33, 200, 70)
        res = simulate(g, cfg910, seed=7)
        p = tmp_path / f"t{i}.json"
        save_trace(p, cfg910, g, res.records.ops, res.cycles, seed=7)
        paths.append(p)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_interrupted_trace_write_leaves_nothing(cfg910, tmp_path, monkeypatch):
    g = build_gemm_native(cfg910, 16, 64, 64)
    res = simulate(g, cfg910)
    target = tmp_path / "t.json"
    import npusim.trace.chrome as chrome

    def boom(*a, **k):
        yield {"ph": "M", "name": "process_name", "pid": 1, "args": {}}
        raise KeyboardInterrupt

    monkeypatch.setattr(chrome, "iter_trace_events", boom)
    with pytest.raises(KeyboardInterrupt):
        save_trace(target, cfg910, g, res.records.ops, res.cycles, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_a_trace_rebuilds_the_run_records(cfg910, tmp_path):
    from npusim.report.attribution import Attribution
    from npusim.trace.read import load_trace, trace_config, trace_records
    g = build_gemm_native(cfg910, 48, 500, 300, cores=4)
    res = simulate(g, cfg910, numerics=False)
    p = tmp_path / "t.json"
    save_trace(p, cfg910, g, res.records.ops, res.cycles, 0, res.records.writebacks)
    doc = load_trace(p)
    ops, wbs = trace_records(doc)
    assert ops == res.records.ops and wbs == res.records.writebacks
    cfg = trace_config(doc)
    assert cfg == cfg910
    assert Attribution(cfg, ops).critical_path() == Attribution(cfg910, res.records.ops).critical_path()
