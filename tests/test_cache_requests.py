"""The per-request path (``cache.run``) and the ``sequential`` step model, against the references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import caches, masking
from simulator.caches import reference as ref
from simulator.kernels import LayerSelector
from common.errors import DipsimError

from test_caches import ref_maker, streams
from test_masking import layer_runs

POLICIES = caches.names()
ONLINE = [n for n in POLICIES if n != "belady"]


@st.composite
def request_runs(draw):
    """Set steps of one layer (``masks [T, N]``), then a request stream, then more set steps."""
    N = draw(st.integers(1, 12))
    cap = draw(st.integers(0, N + 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pop = rng.random(N) ** 2 + 1e-3
    before = rng.random((draw(st.integers(0, 6)), N)) < draw(st.floats(0, 1)) * pop / pop.max()
    ids = rng.choice(N, size=draw(st.integers(0, 80)), p=pop / pop.sum())
    after = rng.random((draw(st.integers(0, 6)), N)) < draw(st.floats(0, 1)) * pop / pop.max()
    return before, ids.astype(np.int64), after, cap


def _make(name, N, cap, **kw):
    c = caches.make(name, n_layers=1, n_columns=N, capacity=cap, **kw)
    if name == "pinned":
        c.prime(np.random.default_rng(0).random((1, N)))
    return c


def _ref(name, c, N, future=None):
    if name == "pinned":
        return ref.PinnedRef(c.capacity[0], np.flatnonzero(c.pinned[0]))
    if name == "belady":
        return ref.BeladyRef(c.capacity[0], future)
    return ref_maker(name, c.capacity, np.zeros((0, 1, N), bool))(0)


@pytest.mark.parametrize("name", ONLINE)
@given(run=request_runs())
@settings(max_examples=60)
def test_requests_continue_from_steps_and_equal_the_reference(name, run):
    """Steps, then a request stream, then steps again, on one cache: every hit as the plain
    per-request reference gives it (the stream works on the cache's own state)."""
    before, ids, after, cap = run
    N = before.shape[1]
    c = _make(name, N, cap)
    r = _ref(name, c, N)
    for m in before:
        assert set(np.flatnonzero(c.step(m[None])[0])) == r.step(np.flatnonzero(m).tolist())
    hits = c.run(ids)
    assert hits.tolist() == [bool(r.step([int(x)])) for x in ids]
    for m in after:
        assert set(np.flatnonzero(c.step(m[None])[0])) == r.step(np.flatnonzero(m).tolist())
    assert set(np.flatnonzero(c.resident[0])) == set(r.contents())
    assert c.n_req == before.sum() + len(ids) + after.sum() and c.n_hit <= c.n_req


@pytest.mark.parametrize("name", POLICIES)
@given(run=request_runs())
@settings(max_examples=40)
def test_requests_equal_one_column_steps(name, run):
    """``run(ids)`` is exactly ``len(ids)`` one-column steps: hits, contents, counters, clock."""
    _, ids, _, cap = run
    N = run[0].shape[1]
    a, b = _make(name, N, cap), _make(name, N, cap)
    one_hot = np.zeros((len(ids), N), dtype=bool)
    one_hot[np.arange(len(ids)), ids] = True
    np.testing.assert_array_equal(a.run(ids), b.run_layer(0, one_hot)[np.arange(len(ids)), ids])
    np.testing.assert_array_equal(a.resident, b.resident)
    assert a.counters() == b.counters() and a.t == b.t == len(ids)


def test_belady_requests_equal_the_reference_and_need_the_whole_stream():
    rng = np.random.default_rng(3)
    for _ in range(50):
        N = int(rng.integers(1, 10))
        ids = rng.integers(0, N, int(rng.integers(0, 60)))
        c = caches.make("belady", n_layers=1, n_columns=N, capacity=int(rng.integers(0, N + 1)))
        r = ref.BeladyRef(c.capacity[0], [{int(x)} for x in ids])
        assert c.run(ids).tolist() == [bool(r.step([int(x)])) for x in ids]
    with pytest.raises(DipsimError, match="whole request stream in one call"):
        c.run(ids)


# ------------------------------------------------------------------------------ sequential steps
def _sequential_expected(name, masks, cap):
    T, L, N = masks.shape
    capv = caches.as_capacity(cap, L, N)
    if name == "belady":   # its future: the requests, one per step
        def make(layer):
            reqs = [{c} for t in range(T) for c in np.flatnonzero(masks[t, layer])]
            return ref.BeladyRef(capv[layer], reqs)
    else:
        make = ref_maker(name, capv, masks)
    return ref.run_sequential_reference(make, masks)


@pytest.mark.parametrize("name", [n for n in POLICIES if n != "pinned"])
@given(data=streams())
@settings(max_examples=40)
def test_sequential_steps_equal_per_request_reference(name, data):
    """``step_model="sequential"``: a step's columns are requests in ascending index order; by
    ``step`` and by ``run_layer`` the hits are the per-request reference's."""
    masks, cap = data
    T, L, N = masks.shape
    expected = _sequential_expected(name, masks, cap)
    by_layer = caches.make(name, n_layers=L, n_columns=N, capacity=cap, step_model="sequential")
    got = np.stack([by_layer.run_layer(layer, masks[:, layer]) for layer in range(L)], axis=1)
    if name != "belady":   # belady runs a layer's whole sequence at once
        c = caches.make(name, n_layers=L, n_columns=N, capacity=cap, step_model="sequential")
        np.testing.assert_array_equal(np.array([c.step(m) for m in masks]), got)
        assert c.counters() == by_layer.counters()
    for t in range(T):
        for layer in range(L):
            assert set(np.flatnonzero(got[t, layer])) == expected[t][layer], f"step {t}, layer {layer}"


@pytest.mark.parametrize("name", POLICIES)
@given(data=streams())
@settings(max_examples=30)
def test_set_and_sequential_agree_when_everything_fits(name, data):
    """With capacity = N nothing is evicted within a step, so both step models count the same hits."""
    masks, _ = data
    T, L, N = masks.shape
    a = caches.make(name, n_layers=L, n_columns=N, capacity=N, step_model="set")
    b = caches.make(name, n_layers=L, n_columns=N, capacity=N, step_model="sequential")
    for layer in range(L):
        np.testing.assert_array_equal(a.run_layer(layer, masks[:, layer]), b.run_layer(layer, masks[:, layer]))
    assert a.counters() == b.counters()


@pytest.mark.parametrize("cache_name", ["lru", "fifo", "lfu", "s3fifo", "s3fifo-lcs", "arc", "pinned"])
@pytest.mark.parametrize("step_model", ["set", "sequential"])
@given(run=layer_runs(), gamma=st.floats(0, 1))
@settings(max_examples=25)
def test_cache_aware_selection_in_one_loop_equals_token_by_token(cache_name, step_model, run, gamma):
    """dip-ca with every online policy and both step models: the compiled select-and-step loop
    chooses the same masks and gets the same hits as the Python loop over tokens."""
    scores, k, cap = run
    N = scores.shape[1]
    p = masking.make("dip-ca", gamma=gamma)
    a = _make(cache_name, N, cap, step_model=step_model)
    b = _make(cache_name, N, cap, step_model=step_model)
    compiled = p.run_layer(0, scores, k, a)
    slow = b.run_layer_selecting(0, LayerSelector(scores, k, None, lambda s, r: p.select(s[None], r[None], k)[0]))
    np.testing.assert_array_equal(compiled[0], slow[0])
    np.testing.assert_array_equal(compiled[1], slow[1])
    assert a.counters() == b.counters()


def test_bad_step_model_and_requests_are_refused():
    with pytest.raises(DipsimError, match="step_model must be one of set, sequential, got 'batch'"):
        caches.make("lru", n_layers=1, n_columns=4, capacity=2, step_model="batch")
    c = caches.make("arc", n_layers=2, n_columns=4, capacity=2)
    with pytest.raises(DipsimError, match=r"column indices must be in 0..3, got 4"):
        c.run([1, 4])
    with pytest.raises(DipsimError, match="1-d array of column indices"):
        c.run([[1]])
    with pytest.raises(DipsimError, match="layer 2 out of range"):
        c.run([1], layer=2)
    seq = caches.make("belady", n_layers=1, n_columns=4, capacity=2, step_model="sequential",
                      future=np.ones((2, 1, 4), bool))
    with pytest.raises(DipsimError, match="whole sequence at once"):
        seq.step(np.ones((1, 4), bool))
    assert "step_model" in caches.policy_params("arc") and "step_model" in caches.policy_params("belady")


@pytest.mark.parametrize("cache_name", ["lru", "s3fifo", "arc"])
def test_replay_takes_the_step_model_as_a_cache_parameter(cache_name):
    """Replay (and so sweeps, ``--cache-params step_model=sequential`` and the closed loop) reach the
    step model through the cache's parameters; with the whole layer cached both models agree."""
    import simulator
    import traces
    from expected_replay import TRACE

    t = traces.load(TRACE)
    kw = dict(keep=0.5, gamma=0.3, warmup=4)
    full = [simulator.replay(t, "dip-ca", cache_name, dram_fraction=1.0, cache_params={"step_model": m}, **kw)
            for m in ("set", "sequential")]
    assert full[0].totals() == full[1].totals()
    seq = simulator.replay(t, "dip-ca", cache_name, dram_fraction=0.4, cache_params={"step_model": "sequential"}, **kw)
    assert seq.config["cache_params"]["step_model"] == "sequential"


def test_replay_refuses_a_bad_step_model_before_work():
    import simulator
    import traces
    from expected_replay import TRACE

    with pytest.raises(DipsimError, match="step_model must be one of set, sequential") as e:
        simulator.replay(traces.load(TRACE), "dip", "arc", cache_params={"step_model": "batch"})
    assert "\n" not in str(e.value)
