"""The greedy keep schedule (simulator.schedules, rule greedy): the allocation's exact mean, its range,
that no step it takes costs more than one it could have taken, optimality on convex curves (brute
force), the joint allocation over up/gate and down by weight, its checks, the cache of the error
curves, and on the real SmolLM2 (slow) curves and a closed loop."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import DipsimError
from simulator import schedules
from simulator.config import ReplayConfig
from simulator.replay import make_groups
from simulator.schedules import curves, greedy

STEPS = (0.05, 0.1, 0.125, 0.25, 0.5)


@st.composite
def error_curves(draw, max_layers=12):
    """Non-increasing error curves over a step's grid (error 0 at keep 1), one per layer."""
    step = draw(st.sampled_from(STEPS))
    K = len(greedy.levels(step))
    L = draw(st.integers(1, max_layers))
    rises = draw(st.lists(st.lists(st.floats(0, 10), min_size=K - 1, max_size=K - 1), min_size=L, max_size=L))
    err = np.zeros((L, K))
    err[:, :-1] = np.cumsum(np.asarray(rises)[:, ::-1], axis=1)[:, ::-1] if K > 1 else 0
    return step, err


@settings(max_examples=300, deadline=None)
@given(error_curves(), st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_greedy_mean_exact_keeps_in_range_and_no_step_dearer_than_an_available_one(curv, u_mean, u_floor, weighted):
    step, err = curv
    L, grid = err.shape[0], greedy.levels(step)
    floor = grid[0] + u_floor * (1 - grid[0]) * 0.5
    low = grid[np.searchsorted(grid, floor - 1e-9)]
    mean = low + u_mean * (1 - low)
    w = np.resize([2.0, 1.0], L) if weighted else np.ones(L)
    keep, picks = greedy.allocate_with_picks(err, mean, step, floor, w)
    assert np.isclose((w * keep).sum() / w.sum(), mean, atol=1e-9)       # the mean exactly (within one step too)
    assert np.all(keep >= low - 1e-9) and np.all(keep <= 1.0)
    at = np.full(L, len(grid) - 1)                                          # replay the picks, brute force
    lowest = int(np.searchsorted(grid, floor - 1e-9))
    for r, cost in picks:
        avail = [(err[i, at[i] - 1] - err[i, at[i]]) / w[i] for i in range(L) if at[i] > lowest]
        assert at[r] > lowest and np.isclose(cost, (err[r, at[r] - 1] - err[r, at[r]]) / w[r])
        assert cost <= min(avail) + 1e-12
        at[r] -= 1


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3), st.data())
def test_greedy_is_optimal_on_convex_curves(L, data):
    """With marginal costs that grow as the keep falls, greedy's whole steps reach the least total
    error of any allocation on the grid with the same mean (brute force over all of them)."""
    step = 0.25
    K = len(greedy.levels(step))
    marg = np.sort(np.asarray(data.draw(st.lists(st.lists(st.floats(0, 5), min_size=K - 1, max_size=K - 1),
                                                 min_size=L, max_size=L))), axis=1)    # ascending with keep
    err = np.zeros((L, K))
    err[:, :-1] = np.cumsum(marg, axis=1)[:, ::-1]
    n = data.draw(st.integers(0, L * (K - 1)))
    mean = 1 - n * step / L
    keep = greedy.allocate(err, mean, step, step)
    at = np.rint(keep / step).astype(int) - 1
    best = min(sum(err[i, c[i]] for i in range(L)) for c in itertools.product(range(K), repeat=L)
               if sum(K - 1 - ci for ci in c) == n)
    assert np.isclose(sum(err[i, at[i]] for i in range(L)), best)


def test_greedy_small_exact_case():
    # layer 0's steps cost 10 each, layer 1's 1: layer 1 goes to the floor first, then layer 0
    err = np.array([[40.0, 30, 20, 10, 0], [4, 3, 2, 1, 0]])
    assert greedy.allocate(err, 0.6, 0.2, 0.2).tolist() == pytest.approx([1.0, 0.2])
    assert greedy.allocate(err, 0.5, 0.2, 0.2).tolist() == pytest.approx([0.8, 0.2])
    assert greedy.allocate(err, 0.55, 0.2, 0.2).tolist() == pytest.approx([0.9, 0.2])   # partial last step
    # per weight saved, layer 1's steps cost 20 against layer 0's 10: two whole steps of layer 0, then
    # a tenth of a step (0.1 of the 2.1 weighted steps) as the partial last one
    keep = greedy.allocate(err, 0.6, 0.2, 0.2, np.array([1.0, 0.05]))
    assert keep.tolist() == pytest.approx([0.58, 1.0])


@pytest.mark.parametrize("v, match", [
    ({"rule": "greedy", "mean": 0.5, "step": 0.3}, r"keep\.step: greedy step 0.3 must divide 1"),
    ({"rule": "greedy", "mean": 0.2, "floor": 0.3}, r"keep: greedy floor 0.3 is above its mean 0.2"),
    ({"rule": "greedy", "mean": 0.5, "tokens": 5}, r"keep\.tokens: must be a whole number in \[16, 8192\]"),
    ({"rule": "greedy", "mean": 0.5, "text": "/nonexistent/calib.txt"}, r"keep\.text: .*calib\.txt"),
    ({"rule": "greedy", "mean": 0.5, "digest": "0123456789ab"}, r"keep\.digest: the calibration text 'tail' changed"),
    ({"rule": "greedy", "mean": 0.5, "error": "kl"}, r"keep\.error: unknown error measure 'kl'; allowed: fisher, "),
    ({"rule": "greedy", "mean": 0.5, "slope": 0.1}, r"keep\.slope: keep schedule 'greedy' has no parameter"),
])
def test_bad_greedy_schedules_one_line(v, match):
    with pytest.raises(DipsimError, match=match):
        ReplayConfig.from_flat({"keep": v}, "config")


def test_greedy_records_its_calibration_digest_and_text_is_apart_from_the_corpus_start():
    from traces.corpus import default_corpus

    cfg = ReplayConfig.from_flat({"keep": {"rule": "greedy", "mean": 0.5}}, "config")
    assert cfg.keep == {"rule": "greedy", "mean": 0.5, "step": 0.05, "floor": 0.1, "tokens": 256, "text": "tail",
                        "error": "fisher", "digest": curves.text_digest("tail")}
    tail, full = curves.calibration_corpus("tail").text, default_corpus().text
    assert full.endswith(tail) and len(tail) < 0.51 * len(full) and tail[:1000] not in full[:len(full) // 2]


@pytest.fixture
def fake_curves(monkeypatch):
    """Curves whose costs are known: up/gate dear in layer 0, down cheap everywhere."""
    def fake(model, text, tokens, step, progress=True):
        grid = greedy.levels(step)
        L = 30
        scale_up = np.r_[10.0, np.ones(L - 1)]
        up, down = np.outer(scale_up, (1 - grid) ** 2), np.outer(np.full(L, 0.1), (1 - grid) ** 2)
        return {f"{g}:{e}": (up if g == "upgate" else down) for g in curves.GROUPS for e in curves.ERRORS}
    monkeypatch.setattr(curves, "curves", fake)


def test_one_greedy_keep_allocates_over_both_groups_by_weight(smol_trace, fake_curves):
    meta = smol_trace.meta
    L = meta["n_layers"]
    g = {x.name: np.array(x.keep) for x in make_groups(meta, ReplayConfig.from_flat(
        {"masking": "dip", "keep": {"rule": "greedy", "mean": 0.5}}).check())}
    assert np.isclose((2 * g["upgate"].sum() + g["down"].sum()) / (3 * L), 0.5)    # the mean over weights read
    assert g["down"].mean() < 0.5 < g["upgate"].mean() and g["upgate"][0] == g["upgate"].max()
    apart = {x.name: np.array(x.keep) for x in make_groups(meta, ReplayConfig.from_flat(
        {"masking": "dip", "keep_up": {"rule": "greedy", "mean": 0.5}, "keep_down": {"rule": "greedy", "mean": 0.4}})
        .check())}
    assert np.isclose(apart["upgate"].mean(), 0.5) and np.isclose(apart["down"].mean(), 0.4)
    assert apart["upgate"][0] == apart["upgate"].max()
    down_only = {x.name: np.array(x.keep) for x in make_groups(meta, ReplayConfig.from_flat(
        {"masking": "glu-prune", "keep": {"rule": "greedy", "mean": 0.5}}).check())}
    assert np.isclose(down_only["down"].mean(), 0.5)        # one group pruned: within it


def test_greedy_needs_a_real_model():
    with pytest.raises(DipsimError, match="greedy measures its error curves on the model 'no-such-model'"):
        schedules.resolve(schedules.check({"rule": "greedy", "mean": 0.5}, "keep"), 4, model="no-such-model")


def test_curves_measured_once_and_cached(tmp_path, monkeypatch):
    calls = []

    def measure(model, text, tokens, step, progress=True):
        calls.append(model)
        return {f"{g}:{e}": np.full((30, 4), 1.0 if g == "upgate" else 2.0) for g in curves.GROUPS for e in curves.ERRORS}
    monkeypatch.setattr(curves, "measure", measure)
    monkeypatch.setattr(curves, "cache_root", lambda: tmp_path)
    monkeypatch.setattr(curves, "_MEMO", {})
    a = curves.curves("smollm2-135m", "tail", 32, 0.25)
    monkeypatch.setattr(curves, "_MEMO", {})            # a new process: read from disk
    b = curves.curves("smollm2-135m", "tail", 32, 0.25)
    c = curves.curves("smollm2-135m", "tail", 64, 0.25)   # other tokens: measured anew
    assert len(calls) == 2 and a.keys() == b.keys() and all(np.array_equal(a[n], b[n]) for n in a)
    assert len(list((tmp_path / "schedules").glob("*.npz"))) == 2 and c["down:fisher"][0, 0] == 2.0


@pytest.mark.slow
def test_greedy_on_smollm2_curves_and_closed_loop(tmp_path, monkeypatch):
    """Real curves (few tokens, a coarse grid): zero at keep 1, falling with the keep on the whole;
    the closed loop of a greedy keep reads the weights a uniform keep at the same mean reads."""
    from simulator.accuracy import evaluate

    monkeypatch.setattr(curves, "cache_root", lambda: tmp_path)
    monkeypatch.setattr(curves, "_MEMO", {})
    c = curves.curves("smollm2-135m", "tail", 32, 0.25, progress=False)
    for name, e in c.items():        # every group and error measure
        assert e.shape == (30, 4) and np.all(e[:, -1] == 0), name
        falls = e[:, 0] > e[:, 2]     # fisher, a squared projection, may dip in a layer; on the whole it falls
        assert falls.all() if not name.endswith("fisher") else e[:, 0].sum() > e[:, 2].sum(), name
    sched = {"rule": "greedy", "mean": 0.5, "step": 0.25, "floor": 0.25, "tokens": 32}
    res = evaluate("smollm2-135m", [{"masking": "dip", "keep": 0.5}, {"masking": "dip", "keep": sched}],
                   tokens=96, reuse=False)
    uni, gre = (r["keep_actual"] for r in res)
    assert np.isclose((2 * gre["upgate"] + gre["down"]) / 3, (2 * uni["upgate"] + uni["down"]) / 3, atol=0.01)
    assert gre["upgate"] != pytest.approx(gre["down"])
    assert res[1]["config"]["keep"]["digest"] == curves.text_digest("tail")


def test_replay_of_a_greedy_schedule_equals_replay_of_its_layer_lists(smol_trace, fake_curves):
    from simulator.replay import replay

    t = smol_trace
    run = {"masking": "dip", "tokens": 48, "calib_tokens": 16, "warmup": 4}
    cfg = ReplayConfig.from_flat({**run, "keep": {"rule": "greedy", "mean": 0.5}}).check()
    keeps = {g.name: g.keep for g in make_groups(t.meta, cfg)}
    lists = ReplayConfig.from_flat({**run, "keep_up": list(keeps["upgate"]), "keep_down": list(keeps["down"])}).check()
    a, b = replay(t, cfg).totals(), replay(t, lists).totals()
    for k in ("hit_rate", "flash_bytes_per_token", "dram_bytes_per_token", "mlp_bytes_per_token"):
        assert a[k] == b[k], k
    assert a["groups"] == b["groups"]


def test_results_row_records_a_schedule_with_all_its_parameters(tmp_path):
    from simulator.sweep.points import make_point
    from simulator.sweep.results import row_of

    params = {"trace": {"model": "smollm2-135m", "tokens": 64}, "masking": "dip", "device": "paper-a18",
              "keep_up": {"rule": "greedy", "mean": 0.5}, "keep_down": 0.4}
    pt = make_point(tmp_path / "e.yaml", params, ["keep_up"], check_traces=False)
    row = row_of(pt, {})
    assert row["p.keep_up.rule"] == "greedy" and row["p.keep_up.step"] == 0.05 and row["p.keep_up.error"] == "fisher"
    assert row["p.keep_up.digest"] == curves.text_digest("tail") and row["p.keep_down"] == 0.4
