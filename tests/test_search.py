"""dipsim optimize: the search section's checks, the Pareto front, the study's storage (resume after
SIGKILL, a changed space refused), with fake trial metrics (``search_fake``); the real model's round
trip of best.yaml is in ``test_search_model.py``."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import search_fake
from common.errors import DipsimError
from simulator.search import load_search, nondominated, run_search, trials_table, write_outputs

TESTS = Path(__file__).resolve().parent


def write_exp(folder: Path, search: dict, base: dict | None = None, name: str = "s") -> Path:
    doc = {"name": name, "trace": {"model": "smollm2-135m", "tokens": 64},
           "base": base or {"cache": "lru", "device": "paper-a18", "accuracy": True}, "search": search}
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


SPACE = {"masking": ["dip", "dip-ca"], "keep": {"low": 0.2, "high": 1.0}, "gamma": {"low": 0.0, "high": 1.0},
         "dram_fraction": {"low": 0.2, "high": 0.8}}


# ----------------------------------------------------------------------------------------- the section
@pytest.mark.parametrize("search, match", [
    ({"space": {"keep": {"low": 0.8, "high": 0.2}}}, r"search\.space\.keep: an inverted range"),
    ({"space": {"keep": {"low": 0.5, "high": 0.5}}}, r"search\.space\.keep: an empty range"),
    ({"space": {"keep": []}}, r"search\.space\.keep: an empty list"),
    ({"space": {"masking": ["dip"], "gamma": {"low": 0, "high": 1}}},
     r"search\.space\.gamma: none of the masking policies searched \(dip\) takes it"),
    ({"space": {"gamma": {"low": 0, "high": 1}}}, r"search\.space\.gamma: .*dip"),
    ({"space": {"keep": {"low": 0.0, "high": 1.0}}}, r"search\.space\.keep: .*\(0, 1\]"),
    ({"space": {"masking": ["dip", "nope"]}}, r"search\.space\.masking: unknown masking policy 'nope'"),
    ({"space": {"kep": [0.5]}}, r"search\.space: unknown key 'kep'"),
    ({"space": SPACE, "objectives": {"speed": "max"}}, r"search\.objectives: unknown objective 'speed'"),
    ({"space": SPACE, "objectives": {"tokens_per_s": "up"}}, r"search\.objectives\.tokens_per_s: expected max or min"),
    ({"space": SPACE, "constraints": {"max_ppl": 0.1}}, r"search\.constraints: unknown constraint 'max_ppl'"),
    ({"space": SPACE, "constraints": {"max_perplexity_increase": -0.1}},
     r"search\.constraints\.max_perplexity_increase: must be a number >= 0"),
    ({"space": SPACE, "trials": 0}, r"search\.trials: must be a whole number"),
    ({"space": SPACE, "sampler": "grid"}, r"search\.sampler: unknown sampler 'grid'; allowed: tpe, nsga2"),
    ({"space": SPACE, "budget": 3}, r"search: unknown key 'budget'"),
])
def test_bad_search_sections_name_file_and_key(tmp_path, search, match):
    p = write_exp(tmp_path, search)
    with pytest.raises(DipsimError, match=match) as e:
        load_search(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_accuracy_objective_needs_accuracy(tmp_path):
    p = write_exp(tmp_path, {"space": SPACE}, base={"device": "paper-a18"})
    s = load_search(p)            # without accuracy the default objective is tokens/s alone
    assert [o.metric for o in s.objectives] == ["tokens_per_s"]
    p = write_exp(tmp_path, {"space": SPACE, "objectives": {"tokens_per_s": "max", "perplexity": "min"}},
                  base={"device": "paper-a18"})
    with pytest.raises(DipsimError, match=r"objectives\.perplexity: .*accuracy: true"):
        load_search(p)


def test_sweep_refuses_a_search_only_file(tmp_path):
    from simulator.sweep import load_experiment

    with pytest.raises(DipsimError, match="dipsim optimize"):
        load_experiment(write_exp(tmp_path, {"space": SPACE}))


def test_trial_values_follow_the_policy(tmp_path):
    """gamma is drawn only for dip-ca, keep only where the policy prunes, integers for whole-number keys."""
    s = load_search(write_exp(tmp_path, {"space": {**SPACE, "masking": ["dip", "dip-ca", "dense"],
                                                   "calib_tokens": {"low": 8, "high": 32}}}))
    assert next(d for d in s.dims if d.name == "calib_tokens").integer
    assert not next(d for d in s.dims if d.name == "keep").integer
    picks = {"dip": {"masking": "dip"}, "dip-ca": {"masking": "dip-ca"}, "dense": {"masking": "dense"}}
    for m, first in picks.items():
        vals = s.values_of(lambda d: first.get(d.name, d.choices[0] if d.choices else d.low))
        assert ("gamma" in vals) == (m == "dip-ca")
        assert ("keep" in vals) == (m != "dense")
        s.point(vals)      # a valid sweep point


# ----------------------------------------------------------------------------------------- the front
def brute_front(v: np.ndarray, ok: np.ndarray) -> set[int]:
    out = set()
    for i in range(len(v)):
        if not ok[i]:
            continue
        dominated = any(ok[j] and all(v[j] <= v[i]) and any(v[j] < v[i]) for j in range(len(v)) if j != i)
        if not dominated:
            out.add(i)
    return out


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3).flatmap(lambda k: st.lists(st.tuples(*[st.integers(0, 4)] * k), min_size=0, max_size=14)),
       st.data())
def test_nondominated_equals_brute_force(rows, data):
    v = np.array(rows, dtype=float).reshape(len(rows), -1) if rows else np.zeros((0, 2))
    ok = np.array(data.draw(st.lists(st.booleans(), min_size=len(v), max_size=len(v))), dtype=bool)
    assert set(nondominated(v, ok).tolist()) == brute_front(v, ok)


KEEPS, FRACS = [0.25, 0.5, 0.75, 1.0], [0.25, 0.75]


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(10, 16)), min_size=16, max_size=16),
       st.integers(4, 16), st.sampled_from(["tpe", "nsga2"]))
def test_reported_front_is_the_brute_force_front(metrics, trials, sampler):
    """Over a small space and fake metrics (ties and infeasible trials likely), the front the search reports
    is exactly the non-dominated set of its feasible evaluated trials."""
    table = {(m, k, f): metrics[i] for i, (m, k, f) in enumerate(
        (m, k, f) for m in ("dip", "dip-ca") for k in KEEPS for f in FRACS)}

    def evaluate(cfg, dense):
        tps, ppl = table[(cfg.replay.masking, cfg.replay.keep, cfg.replay.dram_fraction)]
        return {"m.tokens_per_s": float(tps), "m.perplexity": float(ppl), "m.dense_perplexity": 12.0}

    with tempfile.TemporaryDirectory() as d:
        exp = write_exp(Path(d), {"space": {"masking": ["dip", "dip-ca"], "keep": KEEPS, "dram_fraction": FRACS},
                                  "objectives": {"tokens_per_s": "max", "perplexity": "min"},
                                  "constraints": {"max_perplexity_increase": 0.1}, "trials": trials,
                                  "sampler": sampler})
        s = load_search(exp)
        study = run_search(s, Path(d) / "out", progress=False, evaluate=evaluate)
        df = trials_table(s, study)
        assert len(df) == trials
        v = np.column_stack([-df["m.tokens_per_s"].to_numpy(), df["m.perplexity"].to_numpy()])
        ok = (df["m.perplexity"] <= 12.0 * 1.1 + 1e-12).to_numpy()
        assert (df["feasible"].to_numpy() == ok).all()
        assert set(np.flatnonzero(df["pareto"].to_numpy())) == brute_front(v, ok)


# ----------------------------------------------------------------------------------------- storage
def test_changed_space_refused_and_named_study(tmp_path):
    exp = write_exp(tmp_path, {"space": SPACE, "trials": 3})
    out = tmp_path / "out"
    run_search(load_search(exp), out, progress=False, evaluate=search_fake.evaluate)
    run_search(load_search(exp), out, trials=5, progress=False, evaluate=search_fake.evaluate)   # more trials: fine
    exp2 = write_exp(tmp_path, {"space": {**SPACE, "keep": {"low": 0.3, "high": 1.0}}, "trials": 3})
    with pytest.raises(DipsimError, match=r"study 'default' was run with another search.*--study NEW_NAME") as e:
        run_search(load_search(exp2), out, progress=False, evaluate=search_fake.evaluate)
    assert "\n" not in str(e.value)
    s2 = load_search(exp2)
    study = run_search(s2, out, study_name="narrow", progress=False, evaluate=search_fake.evaluate)
    res = write_outputs(s2, study, out / "narrow")
    assert len(res["table"]) == 3 and (out / "narrow" / "trials.parquet").exists()
    assert (res["table"]["p.keep"].dropna() >= 0.3).all()


def test_not_a_search_folder_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.txt").write_text("mine")
    with pytest.raises(DipsimError, match="not a dipsim optimize folder"):
        run_search(load_search(write_exp(tmp_path, {"space": SPACE})), tmp_path / "out", progress=False,
                   evaluate=search_fake.evaluate)


def _completed(out: Path) -> dict[int, tuple]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st_ = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.load_study(study_name="default", storage=st_)
    return {t.number: (t.params, tuple(t.values)) for t in study.trials if t.state.name == "COMPLETE"}


def test_sigkill_resume_loses_no_finished_trial_and_duplicates_none(tmp_path):
    budget = 12
    exp = write_exp(tmp_path, {"space": SPACE, "trials": budget})
    out, log = tmp_path / "out", tmp_path / "calls.log"
    env = {**os.environ, "DIPSIM_FAKE_LOG": str(log), "DIPSIM_FAKE_SLEEP": "0.4",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    code = ("import search_fake\nfrom simulator.search import load_search, run_search\n"
            f"run_search(load_search({str(exp)!r}), {str(out)!r}, progress=False, evaluate=search_fake.slow_evaluate)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        t0 = time.time()
        while (not log.exists() or len(log.read_text().split()) < 5) and time.time() - t0 < 120:
            assert proc.poll() is None, "the search ended before it was killed"
            time.sleep(0.05)
        time.sleep(0.2)      # inside the next trial's evaluation
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _completed(out)
    calls_before = len(log.read_text().split())
    assert 4 <= len(before) < budget
    os.environ["DIPSIM_FAKE_LOG"] = str(log)
    try:
        study = run_search(load_search(exp), out, progress=False, evaluate=search_fake.slow_evaluate)
    finally:
        del os.environ["DIPSIM_FAKE_LOG"]
    after = _completed(out)
    assert len(after) == budget                               # none duplicated, none missing
    assert all(after[n] == v for n, v in before.items())      # every finished trial kept as it was
    assert len(log.read_text().split()) - calls_before == budget - len(before)   # only the rest evaluated
    assert len(trials_table(load_search(exp), study)) == budget


def test_parallel_pool_finishes_the_budget(tmp_path):
    exp = write_exp(tmp_path, {"space": SPACE, "trials": 6})
    s = load_search(exp)
    study = run_search(s, tmp_path / "out", jobs=2, progress=False, evaluate=search_fake.evaluate)
    df = trials_table(s, study)
    assert len(df) == 6 and df["trial"].is_unique


@pytest.mark.slow
def test_dask_local_cluster_finishes_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    exp = write_exp(tmp_path, {"space": SPACE, "trials": 4})
    s = load_search(exp)
    study = run_search(s, tmp_path / "out", jobs=2, executor="dask", progress=False, evaluate=search_fake.evaluate)
    assert len(trials_table(s, study)) == 4


def test_no_feasible_trial_says_so_and_gives_the_closest(tmp_path):
    import pandas as pd

    exp = write_exp(tmp_path, {"space": {"masking": ["dip"], "keep": {"low": 0.2, "high": 0.8}},
                               "constraints": {"max_perplexity_increase": 0.0}, "trials": 5})
    s = load_search(exp)
    out = tmp_path / "out"
    study = run_search(s, out, progress=False, evaluate=search_fake.evaluate)   # fake perplexity > dense always
    compare = pd.DataFrame({"m.tokens_per_s": [10.0, 20.0, 30.0], "m.perplexity": [12.5, 13.0, 20.0]})
    res = write_outputs(s, study, out, compare=compare)
    assert not res["table"]["feasible"].any() and res["best"] is None and not (out / "best.yaml").exists()
    closest = res["closest"]["c.max_perplexity_increase"].to_numpy()
    assert closest[0] == res["table"]["c.max_perplexity_increase"].min() and (np.diff(closest) >= 0).all()
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()           # the browser report, as a sweep writes one: a point per trial
    data = json.loads(re.search(r'id="dipsim-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["points"]) == len(res["table"]) == 5


def test_cli_refuses_a_changed_space_in_one_line(tmp_path):
    exp = write_exp(tmp_path, {"space": SPACE, "trials": 2})
    run_search(load_search(exp), tmp_path / "out", progress=False, evaluate=search_fake.evaluate)
    exp = write_exp(tmp_path, {"space": {**SPACE, "masking": ["dip", "dip-ca", "threshold"]}, "trials": 2})
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "optimize", str(exp), "--out", str(tmp_path / "out"),
                        "-q"], capture_output=True, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("dipsim: error:")]
    assert r.returncode == 2 and len(errors) == 1 and "--study" in errors[0] and "Traceback" not in r.stderr, r.stderr
