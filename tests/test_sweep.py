"""Sweep experiments: expansion, checks, resumable results, kill safety, Dask = local."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulator import sweep
from common.errors import DipsimError

from expected_replay import TRACE
from test_engine import device


def write_exp(tmp_path: Path, body: dict, name="exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(body, sort_keys=False))
    return p


@pytest.fixture
def dev(tmp_path):
    return str(device(tmp_path))


def base_exp(dev, **extra):
    body = {"name": "t", "trace": str(TRACE),
            "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "warmup": 4, "device": dev},
            "grid": {"gamma": [0.0, 0.5, 1.0], "dram_fraction": [0.25, 0.75]}}
    body.update(extra)
    return body


def test_expansion_grid_zip_drops_and_keys(tmp_path, dev):
    body = base_exp(dev, grid={"gamma": [0.2, 0.5], "cache": ["lru", "belady"]},
                    zip={"masking": ["dip-ca", "dip"], "keep": [0.5, 0.4]})
    exp = sweep.load_experiment(write_exp(tmp_path, body))
    # 2 gamma x 2 cache x 2 zipped; belady+dip-ca dropped (2); dip ignores gamma: 2 -> 1 per cache, the
    # second of each pair dropped as the same point, saying why
    assert sum("offline oracle" in r for _, r in exp.dropped) == 2
    same = [(k, r) for k, r in exp.dropped if "dip takes no gamma" in r]
    assert len(same) == 2 and all(k.startswith("gamma=0.5,") and "the same point as gamma" not in r for k, r in same)
    assert len(exp.dropped) == 4
    assert len(exp.points) == 2 + 2
    keys = [p.key for p in exp.points]
    assert len(set(keys)) == len(keys)
    assert any(k.startswith("gamma=0.2,cache=lru,masking=dip-ca,keep=0.5#") for k in keys)
    assert all("gamma" not in p.params for p in exp.points if p.params["masking"] == "dip")


@pytest.mark.parametrize("edit, message", [
    (lambda b: b["base"].update(gama=0.1), "unknown key 'gama' in base; allowed: trace, device, engine"),
    (lambda b: b["grid"].update(gamma=[]), "grid.gamma is an empty axis"),
    (lambda b: b.update(grid={}), "'grid' has no axes"),
    (lambda b: b["base"].update(masking="dipca"), "unknown masking policy 'dipca'; allowed"),
    (lambda b: b["base"].update(cache="lru3"), "unknown cache policy 'lru3'"),
    (lambda b: b.update(trace="/nope/t.safetensors"), "trace file not found: /nope/t.safetensors"),
    (lambda b: b.update(zip={"keep": [0.1, 0.2], "warmup": [1]}), "zip axes must have the same length"),
    (lambda b: b.update(extra=1), "unknown top-level key 'extra'"),
    (lambda b: b["base"].update(device="phone-99"), "phone-99"),
    (lambda b: b["grid"].update(keep=["half"]), "point gamma=0,dram_fraction=0.25,keep=half: keep: expected a number in \\(0, 1], got 'half'"),
])
def test_bad_experiments_name_file_and_key(tmp_path, dev, edit, message):
    body = base_exp(dev)
    edit(body)
    p = write_exp(tmp_path, body)
    with pytest.raises(DipsimError, match=message) as e:
        sweep.load_experiment(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_run_resume_and_different_sweep(tmp_path, dev, monkeypatch):
    p = write_exp(tmp_path, base_exp(dev))
    exp = sweep.load_experiment(p)
    out = tmp_path / "out"
    sweep.run_sweep(exp, out, progress=False)
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 6 and df["key"].is_unique
    for col in ("p.gamma", "p.dram_fraction", "p.masking", "m.hit_rate", "m.tokens_per_s", "m.analytic_tokens_per_s"):
        assert col in df.columns
    # more gamma -> fewer hits (for the same budget)
    sub = df[df["p.dram_fraction"] == 0.75].sort_values("p.gamma")
    assert sub["m.hit_rate"].is_monotonic_decreasing
    # resume: nothing recomputed
    calls = []
    real = sweep.run.run_point
    monkeypatch.setattr(sweep.run, "run_point", lambda *a, **k: calls.append(1) or {})
    sweep.run_sweep(exp, out, progress=False)
    assert calls == []
    assert pd.read_parquet(out / "results.parquet").equals(df)
    # an edited experiment in the same folder: unchanged points are reused, the new ones run
    edited = sweep.load_experiment(write_exp(tmp_path, base_exp(dev, grid={"gamma": [0.0, 0.3],
                                                                            "dram_fraction": [0.25, 0.75]}), "e.yaml"))
    monkeypatch.setattr(sweep.run, "run_point", lambda *a, **k: calls.append(1) or real(*a, **k))
    sweep.run_sweep(edited, out, progress=False)
    assert len(calls) == 2                                   # gamma 0.3 at both budgets
    again = pd.read_parquet(out / "results.parquet")
    assert len(again) == 4 and set(again["p.gamma"]) == {0.0, 0.3}
    kept = again[again["p.gamma"] == 0.0].set_index("key")["m.hit_rate"]
    assert kept.equals(df[df["p.gamma"] == 0.0].set_index("key")["m.hit_rate"].loc[kept.index])


def test_crash_keeps_finished_points_and_rerun_completes(tmp_path, dev, monkeypatch):
    exp = sweep.load_experiment(write_exp(tmp_path, base_exp(dev)))
    out = tmp_path / "out"
    real = sweep.run.run_point
    n = []

    def flaky(params, threads=None, **kw):
        n.append(params.replay.masking)
        if len(n) == 5:
            raise RuntimeError("worker died")
        return real(params, threads, **kw)

    monkeypatch.setattr(sweep.run, "run_point", flaky)
    with pytest.raises(RuntimeError):
        sweep.run_sweep(exp, out, progress=False)
    assert n[:2] == ["dense", "dense"]      # the two budgets' dense baselines first, then the points
    assert len(pd.read_parquet(out / "results.parquet")) == 2
    assert len(list((out / "dense").glob("*.json"))) == 2
    n.clear()
    monkeypatch.setattr(sweep.run, "run_point", lambda *a, **kw: n.append(1) or real(*a, **kw))
    sweep.run_sweep(exp, out, progress=False)
    assert len(pd.read_parquet(out / "results.parquet")) == 6 and len(n) == 4   # the baselines are kept


def test_sigkill_leaves_a_readable_file(tmp_path, dev):
    exp = write_exp(tmp_path, base_exp(dev))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "simulator.cli", "sweep", str(exp), "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "points").exists() and len(list((out / "points").glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    df = pd.read_parquet(out / "results.parquet")
    assert 1 <= len(df) <= 6
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_parquet(out / "results.parquet")) == 6


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_kill_9_of_a_parallel_sweep_leaves_no_worker(tmp_path, dev):
    """SIGKILL of the sweep process alone (not its group): its pool workers die with it."""
    body = base_exp(dev, grid={"gamma": [round(0.05 * i, 2) for i in range(20)], "dram_fraction": [0.25, 0.75]})
    exp = write_exp(tmp_path, body)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "simulator.cli", "sweep", str(exp), "--out", str(out), "-q", "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = [c for c in _children(proc.pid) if _alive(c)]
        if len(workers) >= 2 and (out / "points").exists() and any((out / "points").glob("*.json")):
            break
        time.sleep(0.02)
    assert len(workers) >= 2, "the sweep finished or never started its workers"
    proc.kill()
    proc.wait()
    gone = time.time() + 2.0
    while time.time() < gone and any(_alive(w) for w in workers):
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"workers {left} outlived the sweep"


@pytest.mark.slow
def test_dask_local_cluster_rows_equal_local_executor(tmp_path, dev):
    exp = sweep.load_experiment(write_exp(tmp_path, base_exp(dev, grid={"gamma": [0.0, 1.0]})))
    a = pd.read_parquet(sweep.run_sweep(exp, tmp_path / "local", jobs=2, progress=False))
    b = pd.read_parquet(sweep.run_sweep(exp, tmp_path / "dask", executor="dask", jobs=2, progress=False))
    cols = [c for c in a.columns if not c.endswith(("seconds", "engine_seconds", "replay_seconds"))]
    a = a[cols].sort_values("key").reset_index(drop=True)
    b = b[cols].sort_values("key").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_plot_command_writes_png(tmp_path, dev):
    exp = sweep.load_experiment(write_exp(tmp_path, base_exp(dev)))
    out = tmp_path / "out"
    sweep.run_sweep(exp, out, progress=False)
    from simulator import plots

    df = sweep.load_results(out)
    for fn in (plots.auto, plots.vs_gamma, plots.pareto):
        fig, ax = fn(df)
        assert fig is not None
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "plot", str(out), "--out", str(tmp_path / "f.png")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_accuracy_columns_run_in_one_batch_before_the_points(tmp_path, dev, monkeypatch):
    from simulator import accuracy

    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path / "accuracy")  # a fresh result cache
    body = {"name": "acc", "trace": {"model": "smollm2-135m", "tokens": 40},
            "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "warmup": 4, "calib_tokens": 8,
                     "accuracy": True, "accuracy_tokens": 24},
            "grid": {"gamma": [0.2, 1.0]}}
    calls = []
    real_eval = accuracy.evaluate

    def counting(model, configs, **kw):
        calls.append((len(configs) if isinstance(configs, list) else 1, kw.get("tokens")))
        return real_eval(model, configs, **kw)

    monkeypatch.setattr(accuracy, "evaluate", counting)
    exp = sweep.load_experiment(write_exp(tmp_path, body))
    df = pd.read_parquet(sweep.run_sweep(exp, tmp_path / "out", progress=False))
    assert calls[0] == (2, 24)                      # both configurations in one batched run
    for col in ("m.perplexity", "m.kl_to_dense", "m.top1_agreement", "m.closed_loop_hit_rate"):
        assert df[col].notna().all(), col
    assert (df["m.perplexity"] > 1).all() and df["m.dense_perplexity"].nunique() == 1
    row = df.set_index("p.gamma")
    assert row.loc[0.2, "m.closed_loop_hit_rate"] > row.loc[1.0, "m.closed_loop_hit_rate"]


def test_accuracy_against_speed_marks_the_front_and_collapsed_points():
    """The demo's plot: the Pareto front runs over the points that did not collapse, a collapsed point
    sits on the collapse line with its real value in its label, and every point is labelled."""
    from simulator import plots

    df = pd.DataFrame({
        "p.masking": ["dense", "dip", "dip-ca", "dip-ca", "dip-ca"],
        "p.keep": [1.0, 0.5, 0.5, 0.5, 0.5],
        "p.gamma": [float("nan"), float("nan"), 0.5, 0.2, 0.0],
        "m.perplexity": [12.0, 17.0, 21.0, 15.0, 6e5],
        "m.dense_perplexity": [12.0] * 5,
        "m.tokens_per_s": [100.0, 30.0, 40.0, 25.0, 700.0],
        "m.analytic_tokens_per_s": [150.0, 280.0, 360.0, 500.0, 760.0],
    })
    fig, axes = plots.accuracy_vs_speed(df, collapse=10)
    assert len(axes) == 2
    texts = [t.get_text() for t in axes[0].texts]
    assert {"dense", "dip 0.5", "dip-ca γ0.5", "dip-ca γ0.2"} <= set(texts)
    assert any(t.startswith("dip-ca γ0: collapsed (6e+05)") for t in texts)
    front = [ln for ln in axes[1].lines if ln.get_label().startswith("Pareto front")][0]
    # paper's model: dense 150 (12), dip-ca 0.2 500 (15) on the front; dip 280 (17) and 0.5 360 (21) dominated
    assert sorted(front.get_xdata().tolist()) == [150.0, 500.0]
    front0 = [ln for ln in axes[0].lines if ln.get_label().startswith("Pareto front")][0]
    assert front0.get_xdata().tolist() == [100.0]          # on the device model dense wins outright
    assert axes[0].get_yscale() == "log"                    # collapsed point present: log axis
    with pytest.raises(DipsimError, match="no tokens/s column"):
        plots.accuracy_vs_speed(df.drop(columns=["m.tokens_per_s", "m.analytic_tokens_per_s"]))


def test_plots_label_budgets_draw_error_bands_and_keep_shares_linear():
    """Points of one policy at two budgets get different labels; a synthetic trace's error bounds
    become a band (lines) and error bars (trade-off); hit rates and top-1 stay on a linear axis,
    and a metric reaching 0 is not put on a log axis."""
    from matplotlib.collections import PolyCollection

    from simulator import plots

    df = pd.DataFrame({
        "p.masking": ["dip-ca"] * 4, "p.keep": [0.5] * 4, "p.gamma": [0.0, 0.5, 0.0, 0.5],
        "p.dram_fraction": [0.25, 0.25, 0.75, 0.75],
        "m.perplexity": [40.0, 14.0, 30.0, 13.0], "m.dense_perplexity": [12.0] * 4,
        "m.hit_rate": [0.4, 0.3, 0.9, 0.8], "m.hit_rate_low": [0.38, 0.28, 0.88, 0.78],
        "m.hit_rate_high": [0.42, 0.32, 0.92, 0.82],
        "m.flash_bytes_per_token": [0.0, 5e6, 0.0, 2e5],
        "m.tokens_per_s": [50.0, 20.0, 90.0, 60.0], "m.tokens_per_s_low": [45.0, 18.0, 80.0, 55.0],
        "m.tokens_per_s_high": [55.0, 22.0, 99.0, 66.0],
    })
    _, axes = plots.accuracy_vs_speed(df, xs=("m.tokens_per_s",))
    texts = {t.get_text() for t in axes[0].texts}
    assert {"dip-ca γ0, 0.25 DRAM", "dip-ca γ0, 0.75 DRAM"} <= texts
    assert any(c.get_label() == "validation error of the trace model" for c in axes[0].containers)
    _, axes = plots.vs_gamma(df)
    by_name = {ax.get_ylabel(): ax for ax in axes}
    hit = by_name["hit rate (by bytes)"]
    assert hit.get_yscale() == "linear" and any(isinstance(c, PolyCollection) for c in hit.collections)
    assert by_name["flash reads (MB per token)"].get_yscale() == "linear"      # reaches 0: not log
    assert by_name["tokens/s (device model)"].get_yscale() == "linear"


@pytest.mark.slow
def test_mmlu_accuracy_columns_of_a_sweep(tmp_path, monkeypatch):
    """``accuracy: {task: mmlu, ...}`` gives every row the MMLU figures with their intervals, the
    dense row's accuracy beside each, and the text task's columns not at all."""
    from simulator import accuracy
    from test_mmlu import OWN, write_questions

    monkeypatch.setattr(accuracy.store, "results_dir", lambda: tmp_path / "accuracy")
    path = write_questions(tmp_path / "own.jsonl")
    body = {"name": "mmlu", "trace": {"model": "smollm2-135m", "tokens": 40},
            "base": {"cache": "lru", "keep": 0.5, "calib_tokens": 8,
                     "accuracy": {"task": "mmlu", "questions": str(path), "questions_per_topic": 0}},
            "zip": {"masking": ["dense", "dip", "threshold"]}}
    df = pd.read_parquet(sweep.run_sweep(sweep.load_experiment(write_exp(tmp_path, body)), tmp_path / "out",
                                         progress=False))
    assert (df["m.mmlu_questions"] == len(OWN)).all() and df["m.mmlu_dense_accuracy"].nunique() == 1
    assert ((df["m.mmlu_accuracy_low"] <= df["m.mmlu_accuracy"]) & (df["m.mmlu_accuracy"] <= df["m.mmlu_accuracy_high"])).all()
    row = df.set_index("p.masking")
    assert row.loc["dense", "m.mmlu_accuracy"] == row.loc["dip", "m.mmlu_dense_accuracy"]
    assert pd.isna(row.loc["dense", "m.mmlu_accuracy_diff"]) and not pd.isna(row.loc["dip", "m.mmlu_accuracy_diff"])
    assert "m.perplexity" not in df.columns


def test_perplexity_intervals_become_error_bars():
    """A row's 95% interval of perplexity (eval's block bootstrap) is drawn as a vertical error bar of
    exactly its ends on the trade-off plot."""
    from simulator import plots

    df = pd.DataFrame({
        "p.masking": ["dense", "dip", "dip-ca"], "p.keep": [1.0, 0.5, 0.5], "p.gamma": [float("nan")] * 2 + [0.2],
        "m.perplexity": [12.0, 14.0, 13.0], "m.perplexity_low": [11.0, 12.5, 12.2],
        "m.perplexity_high": [13.1, 15.8, 14.0], "m.dense_perplexity": [12.0] * 3,
        "m.tokens_per_s": [10.0, 20.0, 25.0],
    })
    _, axes = plots.accuracy_vs_speed(df, xs=("m.tokens_per_s",))
    bars = [c for c in axes[0].containers if c.get_label() == "95% interval of perplexity"]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    assert [(float(s[0][1]), float(s[1][1])) for s in segments] == [(11.0, 13.1), (12.5, 15.8), (12.2, 14.0)]


def test_axes_mixing_names_numbers_and_lists_are_written(tmp_path, dev):
    """A grid whose values differ in type (a format name beside bytes per weight, one keep beside a
    per-layer list) still makes a results file, with those columns as text."""
    body = base_exp(dev, grid={"weight_format": ["int4", 0.75], "keep": [0.5, [0.5, 0.4, 0.5, 0.4, 0.5, 0.4]]})
    out = tmp_path / "out"
    sweep.run_sweep(sweep.load_experiment(write_exp(tmp_path, body)), out, jobs=1, progress=False, log=lambda s: None)
    df = sweep.load_results(out)
    assert len(df) == 4
    assert sorted(set(df["p.weight_format"])) == ["0.75", "int4"]
    assert df["m.flash_read_bytes_per_token"].notna().all()


def test_the_device_decides_the_budget_when_the_experiment_does_not(tmp_path):
    """Two phones that differ only in DRAM capacity give different rows when no dram_fraction or
    dram_bytes is given (the budget is what each leaves after static weights, KV cache and reserve),
    and the same rows when the experiment fixes the fraction."""
    from simulator.engine.budget import device_budget
    import traces

    devs = []
    for name, cap in (("small", "64 MiB"), ("large", "72 MiB")):
        text = device(tmp_path, f"{name}.yaml").read_text().replace(
            "dram_capacity: 12 GiB", f"dram_capacity: {cap}\nusable_dram_fraction: 0.5\nruntime_reserve: 0 B")
        (tmp_path / f"{name}.yaml").write_text(text)
        devs.append(str(tmp_path / f"{name}.yaml"))
    body = {"name": "budget", "trace": str(TRACE), "base": {"masking": "dip", "keep": 0.5, "cache": "lru", "warmup": 4},
            "grid": {"device": devs}}
    out = tmp_path / "out"
    sweep.run_sweep(sweep.load_experiment(write_exp(tmp_path, body)), out, jobs=1, progress=False, log=lambda s: None)
    df = sweep.load_results(out).set_index("p.device").loc[devs]
    meta = traces.load(TRACE).meta
    assert (df["m.cache_budget_from"] == "device").all()
    assert df["m.cache_budget_bytes"].tolist() == [device_budget(d, meta).cache_bytes for d in devs]
    assert 0 < df["m.cache_budget_bytes"].iloc[0] < df["m.cache_budget_bytes"].iloc[1]
    assert df["m.hit_rate"].iloc[0] < df["m.hit_rate"].iloc[1]
    assert df["m.tokens_per_s"].iloc[0] < df["m.tokens_per_s"].iloc[1]
    body["base"]["dram_fraction"] = 0.5
    out2 = tmp_path / "out2"
    sweep.run_sweep(sweep.load_experiment(write_exp(tmp_path, body, "fixed.yaml")), out2, jobs=1, progress=False,
                    log=lambda s: None)
    fixed = sweep.load_results(out2)
    assert (fixed["m.cache_budget_from"] == "dram_fraction").all() and fixed["m.hit_rate"].nunique() == 1


def test_points_name_a_pruned_variant_and_a_lora_adapter(tmp_path, dev):
    """A variant's stored bytes per weight become the weight format (its columns are cheaper to cache
    and read); an adapter's fp16 bytes join the static DRAM and the bytes every token reads."""
    import numpy as np

    from common import store

    import traces

    dims = {k: traces.load(TRACE).meta[k] for k in ("model", "n_layers", "d_model", "d_ff")}   # made for this trace
    meta = {"kind": "variant", **dims, "method": "sparsegpt", "sparsity": 0.5, "bytes": {"bitmask_per_weight": 0.4375}}
    store.save(tmp_path / "v.safetensors", {"x": np.zeros(2, np.float32)}, meta)
    store.save(tmp_path / "a.safetensors", {"m.lora_A": np.zeros((16, 2), np.float32),
                                            "m.lora_B": np.zeros((2, 16), np.float32)},
               {"kind": "adapter", **dims, "rank": 16, "alpha": 32.0, "targets": ["mlp"], "params": 3_000_000,
                "fp16_bytes": 6e6})
    body = base_exp(dev, base={"masking": "dense", "cache": "lru", "warmup": 4, "device": dev, "dram_fraction": 0.5},
                    grid={"variant": [None, str(tmp_path / "v.safetensors")],
                          "adapter": [None, str(tmp_path / "a.safetensors")]})
    out = tmp_path / "out"
    sweep.run_sweep(sweep.load_experiment(write_exp(tmp_path, body)), out, jobs=1, progress=False, log=lambda s: None)
    df = sweep.load_results(out)
    plain = df[df["p.variant"].isna() & df["p.adapter"].isna()].iloc[0]
    pruned = df[df["p.variant"].notna() & df["p.adapter"].isna()].iloc[0]
    lora = df[df["p.variant"].isna() & df["p.adapter"].notna()].iloc[0]
    assert pruned["m.upgate.bytes_per_column"] == pytest.approx(plain["m.upgate.bytes_per_column"] * 0.4375 / 0.625)
    assert pruned["m.flash_bytes_per_token"] < plain["m.flash_bytes_per_token"]
    assert lora["m.static_dram_bytes"] - plain["m.static_dram_bytes"] == 6_000_000
    assert lora["m.dram_read_bytes_per_token"] - plain["m.dram_read_bytes_per_token"] == pytest.approx(6e6)
    assert lora["m.tokens_per_s"] <= plain["m.tokens_per_s"] and lora["m.adapter_bytes"] == 6e6
    bad = base_exp(dev, base={"masking": "dense", "device": dev, "adapter": str(tmp_path / "v.safetensors")})
    with pytest.raises(DipsimError, match="a 'variant' file, expected a 'adapter' file"):
        sweep.load_experiment(write_exp(tmp_path, bad, "bad.yaml"))
    gone = base_exp(dev, base={"masking": "dense", "device": dev, "variant": "../nowhere/v.safetensors"})
    with pytest.raises(DipsimError, match=r"variant: file not found: \.\./nowhere/v\.safetensors \(looked in .*"
                                          r"method files are built by benchmarks/methods\.py"):
        sweep.load_experiment(write_exp(tmp_path, gone, "gone.yaml"))


def test_curves_a_grouping_does_not_change_are_drawn_once_and_titles_wrap():
    """A metric equal for every device (hit rate) is one dashed line saying so, not lines hiding each
    other; a metric that differs (tokens/s) keeps a line per device; a long title is wrapped to the
    figure, and the Pareto plot of a two-device sweep draws a front per device."""
    from simulator import plots
    from simulator.plots.base import fit_title

    df = pd.DataFrame({"p.keep": [0.25, 0.5, 0.25, 0.5], "p.device": ["a", "a", "b", "b"],
                       "p.trace": ["t.safetensors"] * 4,
                       "m.hit_rate": [0.6, 0.55, 0.6, 0.55], "m.flash_bytes_per_token": [4e6, 9e6, 4e6, 9e6],
                       "m.tokens_per_s": [60.0, 26.0, 32.0, 19.0]})
    _, axes = plots.vs_keep(df)
    by_name = {ax.get_ylabel(): ax for ax in axes}
    hit = [ln.get_label() for ln in by_name["hit rate (by bytes)"].get_lines()]
    assert hit == ["every device (the same values)"]
    assert [ln.get_label() for ln in by_name["tokens/s (device model)"].get_lines()] == ["device = a", "device = b"]
    fig, ax = plots.pareto(df)
    assert {ln.get_label() for ln in ax.get_lines()} == {"device = a: Pareto front", "device = b: Pareto front"}
    long = "word " * 60
    assert max(len(line) for line in fit_title(long, fig).splitlines()) < len(long)
