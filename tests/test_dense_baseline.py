"""The dense baseline (issue 23): every run with a device reports the dense model on the same device and
DRAM (``dense_tokens_per_s``, ``speedup_vs_dense``, ...), computed once per baseline and reused."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from simulator import sweep
from simulator.config import EngineConfig, LayoutConfig, PointConfig, ReplayConfig
from simulator.sweep import dense as dense_mod
from simulator.sweep import execute

from expected_replay import TRACE
from test_engine import device

POLICIES = [("dense", 1.0, None), ("dip", 0.5, None), ("dip-ca", 0.5, 0.2), ("glu-prune", 0.5, None),
            ("threshold", 0.5, None), ("static", 0.5, None), ("random", 0.5, None)]


@pytest.fixture
def dev(tmp_path):
    return str(device(tmp_path))


def run(tmp_path, body: dict, out: str = "out", jobs: int = 1) -> pd.DataFrame:
    p = tmp_path / f"{body['name']}.yaml"
    p.write_text(yaml.safe_dump(body, sort_keys=False))
    sweep.run_sweep(sweep.load_experiment(p), tmp_path / out, jobs=jobs, progress=False, log=lambda s: None)
    return sweep.load_results(tmp_path / out)


@pytest.fixture
def fresh(monkeypatch):
    """No dense baseline remembered from an earlier test in this process."""
    monkeypatch.setattr(execute, "_DENSE", {})


def policies_exp(dev, **base):
    return {"name": "fits", "trace": str(TRACE), "base": {"cache": "lru", "warmup": 4, "device": dev, **base},
            "zip": {"masking": [m for m, _, _ in POLICIES], "keep": [k for _, k, _ in POLICIES],
                    "gamma": [1.0 if g is None else g for _, _, g in POLICIES]}}


def test_where_the_mlp_fits_dense_is_one_and_others_are_their_tokens_over_dense(tmp_path, dev, fresh):
    """The issue's case: the device leaves more DRAM than the MLP (12 GiB against a 6-layer SmolLM2
    trace), so the dense model never reads flash. Dense reports exactly 1; every other policy its
    tokens/s over the dense run's, the same figure a separate dense run gives; the secondary
    speedup_vs_dense_stream stays beside it and is far larger."""
    df = run(tmp_path, policies_exp(dev)).set_index("p.masking")
    assert (df["m.cache_budget_from"] == "device").all()
    assert df["m.dense_mlp_in_dram"].all() and df.loc["dense", "m.flash_bytes_per_token"] == 0
    assert df.loc["dense", "m.speedup_vs_dense"] == 1.0
    dense_tps = df.loc["dense", "m.tokens_per_s"]
    assert (df["m.dense_tokens_per_s"] == dense_tps).all()
    for m in df.index.drop("dense"):
        assert df.loc[m, "m.speedup_vs_dense"] == df.loc[m, "m.tokens_per_s"] / dense_tps, m
    assert df["m.speedup_vs_dense"].nunique() > 2          # the policies do differ
    assert (df["m.speedup_vs_dense_stream"] > 2 * df["m.speedup_vs_dense"]).all()
    assert (df["m.memory_saved_vs_dense_fraction"] == 0).all()
    # a dense run of its own, in a process that remembers nothing, gives the same figures
    execute._DENSE.clear()
    cfg = PointConfig(str(TRACE), ReplayConfig(masking="dense", cache="lru", warmup=4), dev)
    own = execute.run_point(cfg)
    assert own["m.tokens_per_s"] == dense_tps and own["m.speedup_vs_dense"] == 1.0
    # and replay --profile says the same for a sparse policy
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "replay", "--trace", str(TRACE), "--masking", "dip",
                          "--keep", "0.5", "--warmup", "4", "--profile", dev, "--format", "json", "-q"],
                         capture_output=True, text=True, timeout=300, check=True)
    d = json.loads(out.stdout)
    assert d["dense_tokens_per_s"] == dense_tps and d["speedup_vs_dense"] == df.loc["dip", "m.speedup_vs_dense"]
    assert d["dense_mlp_in_dram"] is True


def test_a_budget_below_the_mlp_compares_with_dense_at_that_budget(tmp_path, dev, fresh):
    """With half the MLP cached, the baseline is the dense model with half cached (not one that holds
    everything, nor one that streams everything), one per budget."""
    body = policies_exp(dev)
    body["grid"] = {"dram_fraction": [0.25, 0.5]}
    df = run(tmp_path, body)
    for frac, sub in df.groupby("p.dram_fraction"):
        sub = sub.set_index("p.masking")
        assert not sub["m.dense_mlp_in_dram"].any()
        assert (sub["m.dense_tokens_per_s"] == sub.loc["dense", "m.tokens_per_s"]).all(), frac
        assert (sub["m.speedup_vs_dense"] == sub["m.tokens_per_s"] / sub.loc["dense", "m.tokens_per_s"]).all()
    assert df.groupby("p.dram_fraction")["m.dense_tokens_per_s"].first().is_monotonic_increasing


def test_a_sweep_runs_each_baseline_once_and_keeps_it(tmp_path, dev, fresh, monkeypatch):
    """Six DIP-CA points over two budgets need two dense runs, not six; a dense point is its own
    baseline and costs nothing extra; a rerun into the folder (after the process forgot them) runs
    none, and a row from before the dense columns runs again."""
    calls = []
    real = sweep.run.run_point

    def counting(cfg, threads=None, **kw):
        calls.append(cfg.replay.masking)
        return real(cfg, threads, **kw)

    monkeypatch.setattr(sweep.run, "run_point", counting)
    body = {"name": "once", "trace": str(TRACE),
            "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "warmup": 4, "device": dev},
            "grid": {"gamma": [0.0, 0.5, 1.0], "dram_fraction": [0.25, 0.75]}}
    df = run(tmp_path, body)
    assert calls.count("dense") == 2 and len(calls) == 8
    assert len(list((tmp_path / "out" / "dense").glob("*.json"))) == 2
    assert df.groupby("p.dram_fraction")["m.dense_tokens_per_s"].nunique().eq(1).all()
    # a dense axis value: the dense points are the baselines (4 + 2 points, 6 runs)
    calls.clear()
    body["grid"] = {"masking": ["dense", "dip"], "dram_fraction": [0.3, 0.6]}
    body["base"].pop("masking")
    with_dense = run(tmp_path, body, out="out2")
    assert len(calls) == 4 and calls.count("dense") == 2
    assert (with_dense[with_dense["p.masking"] == "dense"]["m.speedup_vs_dense"] == 1.0).all()
    # rerun: the process forgets, the folder remembers; a stale row (no dense columns) runs again
    execute._DENSE.clear()
    calls.clear()
    stale = sorted((tmp_path / "out2" / "points").glob("*.json"))
    row = next(json.loads(f.read_text()) for f in stale if json.loads(f.read_text())["p.masking"] == "dip")
    f = next(f for f in stale if json.loads(f.read_text())["key"] == row["key"])
    f.write_text(json.dumps({k: v for k, v in row.items() if k not in ("m.speedup_vs_dense",)}))
    again = run(tmp_path, body, out="out2")
    assert calls == ["dip"]
    assert again.set_index("key")["m.speedup_vs_dense"].equals(with_dense.set_index("key")["m.speedup_vs_dense"])


def test_parallel_workers_receive_the_baselines(tmp_path, dev, fresh):
    """With two worker processes the rows equal the one-process sweep's, baselines included."""
    body = policies_exp(dev, dram_fraction=0.5)
    one = run(tmp_path, body, out="one").set_index("key")
    two = run(tmp_path, body, out="two", jobs=2).set_index("key").loc[one.index]
    for col in ("m.tokens_per_s", "m.dense_tokens_per_s", "m.speedup_vs_dense"):
        assert two[col].equals(one[col]), col
    assert len(list((tmp_path / "two" / "dense").glob("*.json"))) == 1


def test_a_variant_and_an_adapter_compare_with_the_plain_dense_model(tmp_path, dev, fresh):
    """A pruned variant (its bytes per weight become the weight format) and an adapter (its bytes
    join the static DRAM) are compared with the plain dense model under the same budget rule: the
    variant saves memory against it, the adapter costs some."""
    import numpy as np

    from common import store

    import traces

    dims = {k: traces.load(TRACE).meta[k] for k in ("model", "n_layers", "d_model", "d_ff")}   # made for this trace
    store.save(tmp_path / "v.safetensors", {"x": np.zeros(2, np.float32)},
               {"kind": "variant", **dims, "method": "sparsegpt", "sparsity": 0.5,
                "bytes": {"bitmask_per_weight": 0.4375}})
    store.save(tmp_path / "a.safetensors", {"m.lora_A": np.zeros((16, 2), np.float32),
                                            "m.lora_B": np.zeros((2, 16), np.float32)},
               {"kind": "adapter", **dims, "rank": 16, "alpha": 32.0, "targets": ["mlp"], "params": 3_000_000,
                "fp16_bytes": 6e6})
    body = {"name": "methods", "trace": str(TRACE),
            "base": {"masking": "dense", "cache": "lru", "warmup": 4, "device": dev, "dram_fraction": 0.5},
            "zip": {"variant": [None, str(tmp_path / "v.safetensors"), None],
                    "adapter": [None, None, str(tmp_path / "a.safetensors")]}}
    df = run(tmp_path, body)
    plain = df[df["p.variant"].isna() & df["p.adapter"].isna()].iloc[0]
    pruned = df[df["p.variant"].notna()].iloc[0]
    lora = df[df["p.adapter"].notna()].iloc[0]
    assert plain["m.speedup_vs_dense"] == 1.0 and plain["m.memory_saved_vs_dense_fraction"] == 0.0
    for r in (pruned, lora):
        assert r["m.dense_tokens_per_s"] == plain["m.tokens_per_s"]
        assert r["m.speedup_vs_dense"] == r["m.tokens_per_s"] / plain["m.tokens_per_s"]
        assert r["m.dense_dram_footprint_bytes"] == plain["m.dram_footprint_bytes"]
    assert pruned["m.speedup_vs_dense"] > 1 and pruned["m.memory_saved_vs_dense_fraction"] > 0
    assert lora["m.memory_saved_vs_dense_fraction"] == pytest.approx(-6e6 / plain["m.dram_footprint_bytes"])


# ------------------------------------------------------------------ which points share a baseline
replays = st.fixed_dictionaries({
    "masking": st.sampled_from(["dense", "dip", "dip-ca", "glu-prune", "threshold"]),
    "keep": st.sampled_from([0.25, 0.5, 1.0]),
    "cache": st.sampled_from(["lru", "fifo", "s3fifo"]),
    "dram_fraction": st.sampled_from([None, 0.25, 0.5]),
    "allocation": st.sampled_from(["uniform", "benefit"]),
    "weight_format": st.sampled_from(["source", "int4", "int8"]),
    "warmup": st.sampled_from([4, 16]),
})


@given(a=replays, b=replays, dev_a=st.sampled_from(["d1", "d2"]), dev_b=st.sampled_from(["d1", "d2"]),
       reorder=st.sampled_from(["none", "frequency"]), variant=st.sampled_from([None, "v.safetensors"]),
       neurons=st.sampled_from(["bundled", "separate"]))
def test_points_share_a_baseline_exactly_when_only_the_policy_differs(a, b, dev_a, dev_b, reorder, variant, neurons):
    """Masking, keep, its parameters, a variant, an adapter and the neuron layout (the dense model has
    no neuron group) do not change the baseline; the trace settings, device, budget, cache,
    allocation, weight format, the column layout and the engine do."""
    def point(r, d, **kw):
        mparams = {"gamma": 0.3} if r["masking"] == "dip-ca" else {}
        return PointConfig(str(TRACE), ReplayConfig(**r, masking_params=mparams), d, **kw)

    pa = point(a, dev_a, layout=LayoutConfig(reorder=reorder, neurons=neurons), variant=variant)
    pb = point(b, dev_b)
    ka, kb = dense_mod.baseline_key(pa, TRACE), dense_mod.baseline_key(pb, TRACE)
    settings = ("cache", "dram_fraction", "allocation", "weight_format", "warmup")
    same = all(a[k] == b[k] for k in settings) and dev_a == dev_b and reorder == "none"
    assert (ka == kb) == same
    base = dense_mod.dense_point(pa)
    assert base.replay.masking == "dense" and base.variant is None and base.replay.masking_params == {}
    assert dense_mod.is_own_baseline(base) and dense_mod.baseline_key(base, TRACE) == ka
    assert dense_mod.baseline_key(dataclasses.replace(pb, engine=EngineConfig(overlap_io=False)), TRACE) != kb


def test_bundled_and_separate_neurons_share_the_dense_run(tmp_path, dev, fresh):
    """The neuron layout places only a neuron group, which the dense model does not have: its run is
    the same under both layouts, so a layout axis over a neuron policy runs one baseline, while the
    neuron policy's own rows follow their layout."""
    body = {"name": "nl", "trace": str(TRACE),
            "base": {"masking": "dejavu", "oracle": True, "keep": 0.5, "cache": "lru", "warmup": 4, "device": dev,
                     "dram_fraction": 0.5},
            "grid": {"layout.neurons": ["bundled", "separate"]}}
    df = run(tmp_path, body).set_index("p.layout.neurons")
    assert len(list((tmp_path / "out" / "dense").glob("*.json"))) == 1
    assert df["m.dense_tokens_per_s"].nunique() == 1
    assert (df["m.speedup_vs_dense"] == df["m.tokens_per_s"] / df["m.dense_tokens_per_s"]).all()
    assert df.loc["bundled", "m.flash_requests_per_token"] != df.loc["separate", "m.flash_requests_per_token"]
    pa = PointConfig(str(TRACE), ReplayConfig(masking="dense", cache="lru", warmup=4, dram_fraction=0.5), dev)
    pb = dataclasses.replace(pa, layout=LayoutConfig(neurons="separate"))
    ma, mb = execute.run_point(pa), execute.run_point(pb)

    def figures(m):  # the run's figures, not its wall-clock seconds
        return {k: v for k, v in m.items() if k.startswith("m.") and not k.endswith("_seconds")}
    assert figures(ma) == figures(mb) and ma["m.tokens_per_s"] > 0


def test_versus_dense_formulas():
    """Small exact cases of the figures against a baseline."""
    dense = {"dense_tokens_per_s": 8.0, "dense_dram_footprint_bytes": 1000, "dense_mlp_in_dram": False}
    v = dense_mod.versus_dense({"tokens_per_s": 12.0, "dram_footprint_bytes": 900}, dense)
    assert v == {"dense_tokens_per_s": 8.0, "speedup_vs_dense": 1.5, "dense_dram_footprint_bytes": 1000,
                 "memory_saved_vs_dense_fraction": 0.1, "dense_mlp_in_dram": False}
    assert set(v) == set(dense_mod.DENSE_METRICS)
    figs = dense_mod.dense_figures({"m.tokens_per_s": 8.0, "m.dram_footprint_bytes": 1000.0,
                                    "m.flash_bytes_per_token": 0.0}, prefix="m.")
    assert figs == {**dense, "dense_mlp_in_dram": True}


def test_plots_read_speed_ups_against_the_dense_model():
    """The trade-off plot reads tokens/s as the speed-up over the dense baseline on a top axis when
    the rows share one baseline (not otherwise); the line plots get a speed-up panel with the dense
    model at 1x; a title says when the dense model's DRAM holds its whole MLP."""
    import numpy as np

    from simulator import plots

    df = pd.DataFrame({
        "p.masking": ["dense", "dip", "dip-ca", "dip-ca"], "p.keep": [1.0, 0.5, 0.5, 0.5],
        "p.gamma": [float("nan"), float("nan"), 0.5, 0.2], "p.dram_fraction": [1.0] * 4,
        "m.perplexity": [12.0, 17.0, 21.0, 30.0], "m.dense_perplexity": [12.0] * 4,
        "m.tokens_per_s": [100.0, 30.0, 40.0, 60.0], "m.dense_tokens_per_s": [100.0] * 4,
        "m.speedup_vs_dense": [1.0, 0.3, 0.4, 0.6], "m.dense_mlp_in_dram": [True] * 4,
        "m.hit_rate": [1.0, 0.9, 0.95, 0.97], "m.flash_bytes_per_token": [0.0, 1e5, 5e4, 2e4],
    })
    fig, axes = plots.accuracy_vs_speed(df, xs=("m.tokens_per_s",))
    (top,) = axes[0].child_axes
    fig.canvas.draw()
    assert top.get_xlabel() == plots.label("m.speedup_vs_dense") == "speed-up over dense, same DRAM (x)"
    assert np.allclose(top.get_xlim(), np.array(axes[0].get_xlim()) / 100.0)
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "the dense model's DRAM holds its whole MLP (it never reads flash)" in title
    two = df.assign(**{"m.dense_tokens_per_s": [100.0, 100.0, 80.0, 80.0],
                       "m.dense_mlp_in_dram": [True, True, False, False]})
    fig, axes = plots.accuracy_vs_speed(two, xs=("m.tokens_per_s",))
    assert not axes[0].child_axes and "in 2 of 4 rows" in fig._suptitle.get_text().replace("\n", " ")
    fig, axes = plots.vs_gamma(df[df["p.masking"] == "dip-ca"])
    panel = {ax.get_ylabel(): ax for ax in axes}[plots.label("m.speedup_vs_dense")]
    assert [ln.get_ydata()[0] for ln in panel.lines if ln.get_label().startswith("the dense model")] == [1.0]
    no_note = df.assign(**{"m.dense_mlp_in_dram": [False] * 4})
    assert plots.base.dense_note(no_note) == "" and plots.base.dense_note(df.drop(columns="m.dense_mlp_in_dram")) == ""
