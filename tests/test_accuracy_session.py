"""What a process keeps between closed-loop runs (``accuracy.session``): the rules on fakes (one model at
a time, keys, a pass with gate activations serving one without, an error dropping everything), and on
the real SmolLM2 a search whose trials share the kept model and dense pass giving exactly the metrics of
each trial's point run on its own, with nothing kept."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.accuracy import session
from traces.format import Trace


@pytest.fixture(autouse=True)
def _fresh():
    session.release()
    yield
    session.release()


def fake_pass(gate: bool):
    rng = np.random.default_rng(0)
    x, h = rng.random((2, 3, 4), np.float32), rng.random((2, 3, 8), np.float32)
    g = rng.random((2, 3, 8), np.float32) if gate else None
    return Trace.from_arrays(x, h, {"has_g": gate}, g), "hidden", {}


def test_one_model_at_a_time_keyed_by_files_and_dtype(monkeypatch):
    loads = []
    monkeypatch.setattr("traces.models.load_model", lambda spec, dtype: loads.append((spec, dtype)) or object())
    with session.model("a", "key-a") as m1:
        pass
    with session.model("a", "key-a") as m2:
        pass
    assert m1 is m2 and loads == [("a", "float32")]
    session.dense_pass("d", False, fake_pass)
    with session.model("a", "key-a", dtype="bfloat16"):
        pass
    assert loads[-1] == ("a", "bfloat16") and session.kept() == {"model": "key-a|bfloat16", "dense": None}
    with session.model("b", "key-b") as m3:
        pass
    assert m3 is not m1 and len(loads) == 3


def test_dense_pass_kept_per_key_and_gate_superset():
    calls = []

    def compute(gate):
        calls.append(gate)
        return fake_pass(gate)

    t1, _, s1 = session.dense_pass("k", False, compute)
    t2, _, s2 = session.dense_pass("k", False, compute)
    assert calls == [False] and t1 is t2 and s1 is s2
    tg, _, _ = session.dense_pass("k", True, compute)      # needs g: the kept pass has none
    assert calls == [False, True] and tg.has_g
    t3, _, _ = session.dense_pass("k", False, compute)     # served by the pass with g, seen without it
    assert calls == [False, True] and not t3.has_g and t3.meta["has_g"] is False
    np.testing.assert_array_equal(t3.h(1), tg.h(1))
    session.dense_pass("other", False, compute)
    assert calls == [False, True, False] and session.kept()["dense"] == "other"


def test_an_error_in_a_run_drops_what_is_kept(monkeypatch):
    monkeypatch.setattr("traces.models.load_model", lambda spec, dtype: object())
    with pytest.raises(RuntimeError):
        with session.model("a", "key-a"):
            session.dense_pass("d", False, fake_pass)
            raise RuntimeError("half-way through a forward")
    assert session.kept() == {"model": None, "dense": None}


def small_search(tmp_path, trials: int):
    """A search of the real SmolLM2 over 64 tokens: dip, dip-ca and cats (which needs gate activations)."""
    from simulator.search import load_search
    from test_search import write_exp

    space = {"masking": ["dip", "dip-ca", "cats"], "keep": {"low": 0.3, "high": 0.9},
             "gamma": {"low": 0.0, "high": 1.0}, "dram_fraction": {"low": 0.2, "high": 0.8}}
    base = {"cache": "lru", "device": "paper-a18", "accuracy": True, "warmup": 8, "calib_tokens": 32}
    return load_search(write_exp(tmp_path, {"space": space, "trials": trials, "seed": 3}, base=base))


def assert_trials_equal_points_alone(search, study, df) -> None:
    """Every trial's row against its point run alone in this process with nothing kept (every metric but
    timings, exactly)."""
    from simulator.sweep.execute import run_point

    for t in study.trials:
        session.release()
        alone = run_point(search.point(t.params).config, dense=None)
        row = df[df["trial"] == t.number].iloc[0]
        for k, v in alone.items():
            if "seconds" not in k:
                assert row[k] == v or (v != v and row[k] != row[k]), (t.number, k, row[k], v)


@pytest.mark.slow
def test_search_with_kept_model_gives_the_metrics_of_points_run_alone(tmp_path, monkeypatch):
    """Five trials of a search in one process (cats among the policies, so that passes with and without
    gate activations alternate) against each trial's point run alone with nothing kept; each side with
    its own empty accuracy store, so both measure in the loop."""
    import sys

    import traces.models
    from simulator.accuracy import store
    from simulator.search import run_search, trials_table

    ev = sys.modules["simulator.accuracy.evaluate"]     # the module (the package exports the function)
    counts = {"load": 0, "dense": 0}
    real_load, real_dense = traces.models.load_model, ev.dense_pass

    def load(spec, **kw):
        counts["load"] += 1
        return real_load(spec, **kw)

    def dense(*a, **kw):
        counts["dense"] += 1
        return real_dense(*a, **kw)

    monkeypatch.setattr("traces.models.load_model", load)
    monkeypatch.setattr(ev, "dense_pass", dense)
    search = small_search(tmp_path, 5)
    monkeypatch.setattr(store, "results_dir", lambda: tmp_path / "store-search")
    study = run_search(search, tmp_path / "out", progress=False, log=lambda s: None)
    df = trials_table(search, study)
    assert len(df) == 5 and counts["load"] == 1 and counts["dense"] <= 2, counts
    assert session.kept()["model"] is not None

    monkeypatch.setattr(store, "results_dir", lambda: tmp_path / "store-alone")
    assert_trials_equal_points_alone(search, study, df)
    assert counts["load"] == 1 + 5 and counts["dense"] <= 2 + 5


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_parallel_search_keeps_per_worker_and_gives_the_same_metrics(tmp_path, monkeypatch, executor):
    """Two workers (the local pool, a Dask LocalCluster), each keeping its own model, run by
    ``dipsim optimize --jobs 2`` in a fresh process (a pool forked from a process whose torch already
    ran threads may hang in GNU OpenMP, as this test process has), with its own cache folder linking the
    models and traces: the same check."""
    import os
    import subprocess
    import sys

    import pandas as pd

    from common.io import cache_root
    from simulator.accuracy import store
    from simulator.search import finished_study
    from simulator.sweep.execute import trace_for

    real = cache_root()
    mine = tmp_path / "cache"
    mine.mkdir()
    for name in ("models", "gguf", "traces", "numba"):
        if (real / name).exists():
            (mine / name).symlink_to(real / name)
    search = small_search(tmp_path, 4)
    trace_for(search.point({}).config.trace)       # captured here, so the command's own process runs no torch
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "optimize", str(search.path), "--out",
                        str(tmp_path / "out"), "--jobs", "2", "--executor", executor, "-q"],
                       env={**os.environ, "DIPSIM_CACHE_DIR": str(mine)}, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    study, held = finished_study(search, tmp_path / "out", "default")
    held.close()
    assert len(df) == 4
    monkeypatch.setattr(store, "results_dir", lambda: tmp_path / "store-alone")
    import torch

    threads = torch.get_num_threads()
    if executor == "dask":      # its workers run torch on one thread (the nanny sets OMP_NUM_THREADS=1), and
        torch.set_num_threads(1)     # float32 sums in another order may send a closed loop another way
    try:
        assert_trials_equal_points_alone(search, study, df)
    finally:
        torch.set_num_threads(threads)
