"""Per-layer keep schedules: the rules' exact means and ranges, their checks, and replay of a schedule
equal to replay of the per-layer list it resolves to; a sweep records the rule and its parameters."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import DipsimError
from simulator import schedules
from simulator.config import ReplayConfig
from simulator.replay import calibration, make_groups, replay


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.floats(0.05, 0.95), st.floats(-1, 1))
def test_ramp_mean_is_exact_and_ends_are_mean_pm_half_slope(L, mean, slope):
    try:
        s = schedules.check({"rule": "ramp", "mean": mean, "slope": slope}, "k")
    except DipsimError:
        assert mean - abs(slope) / 2 < schedules.MIN_KEEP or mean + abs(slope) / 2 > 1
        return
    keep = np.array(schedules.resolve(s, L))
    assert keep.shape == (L,) and np.isclose(keep.mean(), mean, atol=1e-12)
    if L > 1:
        assert np.isclose(keep[0], mean - slope / 2) and np.isclose(keep[-1], mean + slope / 2)
        assert np.all(np.diff(keep) * np.sign(slope) >= -1e-15)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 0.2), min_size=2, max_size=40), st.floats(0.3, 0.7), st.floats(0, 0.15))
def test_owl_keeps_mean_exact_in_range_and_ordered_by_outliers(ratios, mean, lam):
    keep = schedules.owl_keeps(np.array(ratios), mean, lam)
    assert np.isclose(keep.mean(), mean, atol=1e-12)
    assert keep.min() >= mean - 2 * lam - 1e-12 and keep.max() <= mean + 2 * lam + 1e-12
    order = np.argsort(ratios, kind="stable")
    assert np.all(np.diff(keep[order]) >= -1e-12)       # more outliers, never fewer columns


def test_outlier_ratio_small_exact_case():
    scores = np.zeros((2, 2, 4))
    scores[:, 0] = [[1, 1, 1, 9], [1, 1, 1, 9]]    # layer 0: mean 3, one of four above 2 x mean
    scores[:, 1] = 1.0                             # layer 1: none above
    assert schedules.outlier_ratios(scores, 2.0).tolist() == [0.25, 0.0]


@pytest.mark.parametrize("v, match", [
    ({"rule": "ramp", "mean": 0.5, "slope": 1.2}, r"keep: mean 0.5 \+- slope / 2 0.6 leaves \(0, 1\]"),
    ({"rule": "wave", "mean": 0.5}, r"keep: a keep schedule is a mapping with rule \(ramp, owl, greedy\)"),
    ({"rule": "ramp", "slope": 0.1}, r"keep: keep schedule 'ramp' needs mean"),
    ({"rule": "ramp", "mean": 0.5, "lam": 0.1}, r"keep\.lam: keep schedule 'ramp' has no parameter 'lam'"),
    ({"rule": "owl", "mean": 0.9, "lam": 0.1}, r"keep: mean 0.9 \+- 2 lam 0.2 leaves"),
])
def test_bad_schedules_one_line(v, match):
    with pytest.raises(DipsimError, match=match):
        ReplayConfig.from_flat({"keep": v}, "config")


def test_schedule_from_command_line_text():
    cfg = ReplayConfig.from_flat({"keep": "{rule: ramp, mean: 0.5, slope: 0.2}"}, "command line")
    assert cfg.keep == {"rule": "ramp", "mean": 0.5, "slope": 0.2}


@pytest.mark.parametrize("sched", [{"rule": "ramp", "mean": 0.5, "slope": 0.4},
                                   {"rule": "owl", "mean": 0.5, "lam": 0.1, "m": 3}])
def test_replay_of_a_schedule_equals_replay_of_its_layer_list(smol_trace, sched):
    t = smol_trace
    cfg = ReplayConfig.from_flat({"masking": "dip", "keep": sched, "tokens": 48, "calib_tokens": 16,
                                  "warmup": 4}).check()
    keeps = {g.name: g.keep for g in make_groups(t.meta, cfg, calibration(t, t.meta, cfg))}
    assert np.isclose(np.mean(keeps["upgate"]), 0.5) and len(set(keeps["down"])) > 1
    lists = ReplayConfig.from_flat({"masking": "dip", "keep_up": list(keeps["upgate"]), "keep_down":
                                    list(keeps["down"]), "tokens": 48, "calib_tokens": 16, "warmup": 4}).check()
    a, b = replay(t, cfg).totals(), replay(t, lists).totals()
    for k in ("hit_rate", "flash_bytes_per_token", "dram_bytes_per_token"):
        assert a[k] == b[k], k
    assert a["groups"] == b["groups"]


def test_search_space_over_schedule_parameters(tmp_path):
    import yaml

    from simulator.search import load_search

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({
        "name": "s", "trace": {"model": "smollm2-135m", "tokens": 64},
        "base": {"device": "paper-a18", "masking": "dip", "keep": {"rule": "ramp", "mean": 0.5}},
        "search": {"space": {"keep.rule": ["ramp", "owl", "greedy"], "keep.slope": {"low": -0.4, "high": 0.4},
                             "keep.lam": {"low": 0.0, "high": 0.1}, "keep.mean": {"low": 0.4, "high": 0.6},
                             "keep.step": [0.05, 0.1]}}}))
    s = load_search(p)
    for rule in ("ramp", "owl", "greedy"):
        vals = s.values_of(lambda d: rule if d.name == "keep.rule" else d.choices[-1] if d.choices else d.low)
        assert ("keep.slope" in vals) == (rule == "ramp") and ("keep.lam" in vals) == (rule == "owl")
        assert ("keep.step" in vals) == (rule == "greedy")
        pt = s.point(vals)
        assert pt.config.replay.keep["rule"] == rule and pt.config.replay.keep["mean"] == 0.4
    assert pt.config.replay.keep["step"] == 0.1 and pt.config.replay.keep["digest"]
