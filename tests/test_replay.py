"""Replay, allocation and miss-ratio curves."""
from __future__ import annotations

import json

import numpy as np
import pytest

import simulator
import traces
from simulator import kernels, mrc
from common.errors import DipsimError
from traces.synthetic import synthetic_trace

from expected_replay import CONFIGS, EXPECTED, TRACE, compute, key


@pytest.fixture(scope="module")
def small():
    return traces.load(TRACE)


def test_expected_values_on_committed_trace():
    expected = json.loads(EXPECTED.read_text())
    got = compute()
    changed = [k for k in expected if got.get(k) != expected[k]]
    assert not changed, ("replay figures changed for:\n  " + "\n  ".join(changed) +
                         "\nIf the change is intended, run: python tests/expected_replay.py --update")
    assert set(got) == {key(c) for c in CONFIGS}


def test_totals_are_consistent(small):
    log = simulator.replay(small, "dip-ca", "lru", keep=0.5, dram_fraction=0.6, gamma=0.3, warmup=4)
    tot = log.totals()
    for name, g in log.groups.items():
        assert (g.hits <= g.selected).all()
        assert (g.capacity == int(np.floor(0.6 * g.n_columns))).all()          # uniform allocation
        misses = sum(len(g.missed(t, layer)) for t in range(4, small.n_tokens) for layer in range(small.n_layers))
        assert misses == int(g.misses[4:].sum())
        per = tot["groups"][name]
        assert per["flash_bytes_per_token"] == pytest.approx(misses * g.bytes_per_column / (small.n_tokens - 4))
    assert tot["measured_tokens"] == small.n_tokens - 4
    assert log.totals("warmup")["measured_tokens"] == 4
    bpw = small.meta["bytes_per_weight"]
    assert log.groups["upgate"].bytes_per_column == 2 * small.d_ff * bpw
    assert log.groups["down"].bytes_per_column == small.d_model * bpw
    assert tot["mlp_bytes_per_token"] == pytest.approx(tot["flash_bytes_per_token"] + tot["dram_bytes_per_token"])


def test_threads_do_not_change_results(small):
    a = simulator.replay(small, "random", "s3fifo", keep=0.4, dram_fraction=0.5, threads=1)
    b = simulator.replay(small, "random", "s3fifo", keep=0.4, dram_fraction=0.5, threads=3)
    for name in a.groups:
        np.testing.assert_array_equal(a.groups[name].hits, b.groups[name].hits)
        np.testing.assert_array_equal(a.groups[name].missed_bits, b.groups[name].missed_bits)


def test_dense_with_full_cache_has_only_compulsory_misses(small):
    log = simulator.replay(small, "dense", "lru", dram_fraction=1.0, warmup=0)
    for g in log.groups.values():
        assert (g.misses[0] == g.n_columns).all() and (g.misses[1:] == 0).all()


def test_access_log_roundtrip(small, tmp_path):
    log = simulator.replay(small, "dip", "lru", keep=0.5, dram_fraction=0.5)
    p = log.save(tmp_path / "log.npz")
    back = simulator.AccessLog.load(p)
    assert back.totals() == log.totals()
    np.testing.assert_array_equal(back.groups["down"].missed_mask(7), log.groups["down"].missed_mask(7))


@pytest.mark.parametrize("kwargs, message", [
    (dict(masking="dip-ca", cache="belady"), "offline oracle"),
    (dict(masking="dip", keep=1.5), r"replay: keep: must be a number in \(0, 1\], got 1.5"),
    (dict(masking="dip", keep=0.0), r"replay: keep: must be a number in \(0, 1\], got 0.0"),
    (dict(masking="dip", keep=[0.5, 0.5]), "list of 6 numbers"),
    (dict(masking="dip", dram_fraction=1.2), r"replay: dram_fraction: must be a number in \[0, 1\], got 1.2"),
    (dict(masking="dip-ca", gamma=-0.1), r"dip-ca gamma: must be a number in \[0, 1\]"),
    (dict(masking="dip", cache="lru2"), "unknown cache policy 'lru2'; allowed: arc, belady, fifo"),
    (dict(masking="nope"), "unknown masking policy 'nope'; allowed:"),
    (dict(masking="dip", allocation="greedy"), "unknown allocation 'greedy'; allowed: uniform, benefit"),
    (dict(masking="dip", weight_format="int3"), "replay: weight_format: unknown weight format 'int3'; allowed"),
    (dict(masking="dip", tokens=1000), r"tokens must be in 1..48"),
    (dict(masking="dip", cache_params={"size": 3}), "cache policy 'lru' has no parameter 'size'"),
])
def test_bad_options_are_refused_before_work(small, kwargs, message):
    with pytest.raises(DipsimError, match=message) as e:
        simulator.replay(small, **kwargs)
    assert "\n" not in str(e.value)


def test_trace_without_h_cannot_prune_down(tmp_path):
    t = synthetic_trace(2, 16, 32, 20, with_h=False)
    with pytest.raises(DipsimError, match="holds no h"):
        simulator.replay(t, "dip", "lru")
    log = simulator.replay(t, "dense", "lru", warmup=0)  # dense needs no scores
    assert log.totals()["groups"]["down"]["keep"] == 1.0


def test_weight_format_sets_bytes_per_column(small):
    log = simulator.replay(small, "dip", "lru", weight_format="int8")
    assert log.groups["down"].bytes_per_column == small.d_model * 1.0
    log = simulator.replay(small, "dip", "lru", weight_format=0.5625)
    assert log.groups["upgate"].bytes_per_column == 2 * small.d_ff * 0.5625


@pytest.mark.parametrize("masking", ["dip", "threshold", "glu-prune"])
def test_one_pass_lru_curve_equals_replay_at_every_size(small, masking):
    rows = mrc.curve(small, masking, keep=0.5, fractions=[0, 0.1, 0.3, 0.5, 0.7, 1.0], opt=False,
                     warmup=8, calib_tokens=16)
    for row in rows:
        tot = simulator.replay(small, masking, "lru", keep=0.5, dram_fraction=row["dram_fraction"], warmup=8,
                               calib_tokens=16).totals()
        assert row["lru.hit_rate"] == pytest.approx(tot["hit_rate"], abs=1e-12)
        for g, v in tot["groups"].items():
            assert row[f"lru.{g}.hit_rate"] == pytest.approx(v["hit_rate"], abs=1e-12)


def test_curve_with_opt_and_cache_aware_masking(small):
    rows = mrc.curve(small, "dip", keep=0.5, fractions=[0.25, 0.75], opt=True, warmup=8)
    for r in rows:
        assert r["belady.hit_rate"] >= r["lru.hit_rate"] - 1e-12
    ca = mrc.curve(small, "dip-ca", keep=0.5, fractions=[0.25, 0.75], gamma=0.2, warmup=8)
    assert "belady.hit_rate" not in ca[0] and ca[1]["lru.hit_rate"] > ca[0]["lru.hit_rate"]


def test_lru_stack_hits_matches_a_direct_count():
    rng = np.random.default_rng(5)
    masks = rng.random((30, 2, 9)) < 0.4
    H = kernels.lru_stack_hits(masks, 2, 9)
    from simulator import caches

    for c in range(10):
        cache = caches.make("lru", n_layers=2, n_columns=9, capacity=c)
        hits = sum(cache.step(m).sum(axis=1) for m in masks)
        np.testing.assert_array_equal(H[:, c], hits)


def test_benefit_allocation_beats_uniform_on_uneven_layers():
    # layers 0-1 repeat their activations (cacheable), layers 2-3 are noise: a good split favours 0-1
    t = synthetic_trace(4, 32, 64, 200, seed=1, rho=0.0)
    xs = np.stack([t.x(layer) for layer in range(4)])
    hs = np.stack([t.h(layer) for layer in range(4)])
    for arr in (xs, hs):
        arr[:2] = arr[:2, :1]  # every token equal to the first
    t = traces.Trace.from_arrays(xs, hs, t.meta)
    kw = dict(keep=0.5, dram_fraction=0.3, warmup=20, calib_tokens=50)
    uni = simulator.replay(t, "dip", "lru", "uniform", **kw)
    ben = simulator.replay(t, "dip", "lru", "benefit", **kw)
    assert ben.totals()["hit_rate"] > uni.totals()["hit_rate"] + 0.05
    spent = sum((g.capacity * g.bytes_per_column).sum() for g in ben.groups.values())
    assert spent <= ben.config["dram_bytes"] + 1e-6
    assert ben.groups["down"].capacity[:2].sum() > ben.groups["down"].capacity[2:].sum()
