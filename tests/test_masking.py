"""Masking policies: hand-worked cases for every formula, and properties on random scores."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import masking
from common.errors import DipsimError

S = np.array([[3.0, 1.0, 2.0, 2.0, 0.5],
              [0.0, 4.0, 0.0, 1.0, 1.0]], dtype=np.float32)
R = np.array([[0, 1, 0, 1, 1],
              [1, 0, 0, 0, 1]], dtype=bool)


def rows(mask):
    return [np.flatnonzero(r).tolist() for r in mask]


def test_dense():
    assert masking.make("dense").select(S, R, 1).all()


def test_dip_topk_with_lowest_index_ties():
    # row 0: 3 > 2 = 2 > 1 > 0.5, k=2 -> {0, 2} (tie 2.0 at 2 and 3: lowest index)
    # row 1: 4 > 1 = 1 > 0 = 0, k=2 -> {1, 3}
    assert rows(masking.make("dip").select(S, None, 2)) == [[0, 2], [1, 3]]
    # per-layer k
    assert rows(masking.make("dip").select(S, None, [1, 3])) == [[0], [1, 3, 4]]


def test_dip_ca_formula():
    # gamma 0.5: row 0 -> s = [1.5, 1, 1, 2, 0.5] -> top2 {3, 0}
    #            row 1 -> s = [0, 2, 0, 0.5, 1]   -> top2 {1, 4}
    assert rows(masking.make("dip-ca", gamma=0.5).select(S, R, 2)) == [[0, 3], [1, 4]]
    # gamma 0.25: row 0 -> [0.75, 1, 0.5, 2, 0.5] -> {3, 1}; row 1 -> [0, 1, 0, 0.25, 1] -> {1, 4} (tie: lowest)
    assert rows(masking.make("dip-ca", gamma=0.25).select(S, R, 2)) == [[1, 3], [1, 4]]
    # fixed_top_n=1 exempts column 0 in row 0 (raw max) and column 1 in row 1
    # gamma 0.25, row 0 -> [3, 1, 0.5, 2, 0.5] -> {0, 3}; row 1 -> [0, 4, 0, 0.25, 1] -> {1, 4}
    assert rows(masking.make("dip-ca", gamma=0.25, fixed_top_n=1).select(S, R, 2)) == [[0, 3], [1, 4]]


def test_dip_ca_gamma_zero_is_the_limit():
    # cached first (by score), then the rest by score: row 0 cached {1, 3, 4} -> k=2 -> {3, 1}
    # row 1 cached {0, 4} (scores 0, 1) -> k=3 -> {0, 4} + best uncached {1}
    assert rows(masking.make("dip-ca", gamma=0.0).select(S, R, [2, 3])) == [[1, 3], [0, 1, 4]]


def test_glu_prune_only_prunes_down():
    p = masking.make("glu-prune")
    assert p.prunes == ("down",)
    assert rows(p.select(S, None, 1)) == [[0], [1]]


def test_threshold_calibration():
    # one layer, scores 1..10 over 2 tokens x 5 columns; keep 3/5 -> 60% of 10 values = 6 above tau
    prefix = np.arange(1, 11, dtype=np.float32).reshape(2, 1, 5)
    p = masking.make("threshold").calibrate(prefix, 3)
    assert p.thresholds == (4.0,)
    assert rows(p.select(np.array([[5, 4, 3, 9, 1]], np.float32), None, 3)) == [[0, 3]]
    with pytest.raises(DipsimError, match="must be calibrated"):
        masking.make("threshold").select(S, None, 1)


def test_static_uses_prefix_means():
    prefix = np.array([[[1, 5, 2, 0]], [[3, 1, 2, 0]]], dtype=np.float32)  # means [2, 3, 2, 0]
    p = masking.make("static").calibrate(prefix, 2)
    assert rows(p.select(np.array([[9, 0, 0, 9]], np.float32), None, 2)) == [[0, 1]]


def test_random_exact_k_and_reproducible():
    a = masking.make("random", seed=3)
    b = masking.make("random", seed=3)
    for _ in range(3):
        m = a.select(S, None, [2, 4])
        assert m.sum(axis=1).tolist() == [2, 4]
        np.testing.assert_array_equal(m, b.select(S, None, [2, 4]))


@st.composite
def score_cases(draw):
    L = draw(st.integers(1, 4))
    N = draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # few distinct values so that ties are common
    scores = rng.integers(0, draw(st.integers(1, 6)), size=(L, N)).astype(np.float32)
    resident = rng.random((L, N)) < draw(st.floats(0, 1))
    k = rng.integers(0, N + 1, size=L)
    return scores, resident, k


@given(case=score_cases())
@settings(max_examples=200)
def test_topk_is_exact_with_stable_ties(case):
    scores, _, k = case
    m = masking.make("dip").select(scores, None, k)
    for layer in range(scores.shape[0]):
        expected = np.sort(np.argsort(-scores[layer], kind="stable")[: k[layer]])
        assert np.flatnonzero(m[layer]).tolist() == expected.tolist()


@given(case=score_cases())
@settings(max_examples=200)
def test_dip_ca_gamma_one_equals_dip(case):
    scores, resident, k = case
    np.testing.assert_array_equal(masking.make("dip-ca", gamma=1.0).select(scores, resident, k),
                                  masking.make("dip").select(scores, resident, k))


@given(case=score_cases(), gamma=st.floats(0.0, 1.0))
@settings(max_examples=200)
def test_dip_ca_keeps_k_and_prefers_cached(case, gamma):
    scores, resident, k = case
    m = masking.make("dip-ca", gamma=gamma).select(scores, resident, k)
    assert (m.sum(axis=1) == k).all()
    if gamma == 0.0:
        enough = resident.sum(axis=1) >= k
        assert not (m & ~resident)[enough].any()   # never an uncached column while k cached ones exist
        lacking = ~enough
        assert (m | ~resident)[lacking].all()       # otherwise every cached column is taken


def test_bad_input():
    with pytest.raises(DipsimError, match="unknown masking policy 'dipca'; allowed: cats, cats-ca, dejavu, dense, dip, dip-ca, glu-prune"):
        masking.make("dipca")
    with pytest.raises(DipsimError, match=r"dip-ca gamma: must be a number in \[0, 1\], got 1.5"):
        masking.make("dip-ca", gamma=1.5)
    with pytest.raises(DipsimError, match="has no parameter 'gama'; its parameters: fixed_top_n, gamma"):
        masking.make("dip-ca", gama=0.1)
    with pytest.raises(DipsimError, match="k = 6 out of range: a layer has 5 columns"):
        masking.make("dip").select(S, None, 6)
    with pytest.raises(DipsimError, match="list of 2 ints"):
        masking.make("dip").select(S, None, [1, 2, 3])


# ------------------------------------------------------------------ compiled selection, layer runs
@st.composite
def magnitude_rows(draw):
    """Rows of non-negative float32 magnitudes, with ties and zeros common (few distinct values, or
    continuous values spread over decades so that the radix buckets split)."""
    N = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        s = rng.integers(0, draw(st.integers(1, 6)), size=N).astype(np.float32)
    else:
        s = (rng.lognormal(0, draw(st.floats(0.1, 6)), size=N) * (rng.random(N) < 0.9)).astype(np.float32)
    resident = rng.random(N) < draw(st.floats(0, 1))
    k = draw(st.integers(0, N))
    return s, resident, k


@given(case=magnitude_rows())
@settings(max_examples=300)
def test_compiled_topk_equals_numpy(case):
    from simulator import kernels

    s, _, k = case
    work, fav, hist = kernels.scratch(s.size)
    out = np.zeros(s.size, bool)
    kernels.topk_row(s, k, out, work[2], hist)
    np.testing.assert_array_equal(out, kernels.topk_mask(s[None], np.array([k]))[0])


@given(case=magnitude_rows(), gamma=st.sampled_from([0.0, 0.2, 0.5, 1.0]) | st.floats(0, 1),
       fixed=st.integers(0, 5))
@settings(max_examples=300)
def test_compiled_dip_ca_equals_numpy(case, gamma, fixed):
    from simulator import kernels

    s, resident, k = case
    policy = masking.make("dip-ca", gamma=gamma, fixed_top_n=fixed)
    code, params = policy.row_rule()
    work, fav, hist = kernels.scratch(s.size)
    out = np.zeros(s.size, bool)
    kernels.select_row(code, params, s, resident, k, out, work, fav, hist)
    np.testing.assert_array_equal(out, policy.select(s[None], resident[None], k)[0])


@st.composite
def layer_runs(draw):
    T = draw(st.integers(1, 25))
    N = draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pop = rng.random(N) ** 3 + 0.05           # skewed popularity, so that caches matter
    scores = (rng.random((T, N)) * pop).astype(np.float32)
    if draw(st.booleans()):
        scores = np.round(scores * 4) / 4     # ties
    return scores, draw(st.integers(0, N)), draw(st.integers(0, N + 1))


def _policy(name, scores, k):
    p = masking.make(name, **({"seed": 5} if name == "random" else
                              {"oracle": True} if name in ("predictor", "dejavu", "powerinfer") else {}))
    if p.needs_calibration:
        p = p.calibrate(scores[:, None, :], k)    # one layer; calibrated on its own tokens
    return p


@pytest.mark.parametrize("masking_name", masking.names())
@pytest.mark.parametrize("cache_name", ["none", "lru", "fifo", "lfu", "s3fifo"])
@given(run=layer_runs())
@settings(max_examples=25)
def test_layer_run_equals_token_by_token(masking_name, cache_name, run):
    """``policy.run_layer`` (vectorized masks or the compiled cache-aware loop) chooses the same
    masks and gets the same hits as selecting and stepping token by token, as replay used to."""
    from simulator import caches

    scores, k, cap = run
    T, N = scores.shape
    a = caches.make(cache_name, n_layers=1, n_columns=N, capacity=cap)
    b = caches.make(cache_name, n_layers=1, n_columns=N, capacity=cap)
    pa, pb = _policy(masking_name, scores, k), _policy(masking_name, scores, k)
    want_m, want_h = [], []
    for t in range(T):
        m = pa.select(scores[t][None], a.resident, k)
        want_m.append(m[0])
        want_h.append(a.step(m)[0])
    masks, hits = pb.run_layer(0, scores, k, b)
    np.testing.assert_array_equal(masks, np.array(want_m))
    np.testing.assert_array_equal(hits, np.array(want_h))
    assert b.counters() == a.counters()


@given(run=layer_runs(), gamma=st.floats(0, 1))
@settings(max_examples=40)
def test_python_fallback_of_cache_aware_runs_equals_compiled(run, gamma):
    from simulator import caches
    from simulator.kernels import LayerSelector

    scores, k, cap = run
    N = scores.shape[1]
    p = masking.make("dip-ca", gamma=gamma)
    a = caches.make("lru", n_layers=1, n_columns=N, capacity=cap)
    b = caches.make("lru", n_layers=1, n_columns=N, capacity=cap)
    compiled = p.run_layer(0, scores, k, a)
    slow = b.run_layer_selecting(0, LayerSelector(scores, k, None,
                                                  lambda s, r: p.select(s[None], r[None], k)[0]))
    np.testing.assert_array_equal(compiled[0], slow[0])
    np.testing.assert_array_equal(compiled[1], slow[1])
