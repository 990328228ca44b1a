"""Cache policies: invariants on random streams (hypothesis) and agreement with plain references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulator import caches
from simulator.caches import reference as ref
from common.errors import DipsimError

POLICIES = caches.names()


def build(name, masks, capacity, **kw):
    T, L, N = masks.shape
    if name == "belady":
        kw["future"] = masks
    return caches.make(name, n_layers=L, n_columns=N, capacity=capacity, **kw)


@st.composite
def streams(draw, single=False, max_n=12):
    L = draw(st.integers(1, 3))
    N = draw(st.integers(1, max_n))
    T = draw(st.integers(1, 30))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if single:
        cols = rng.integers(-1, N, size=(T, L))  # -1: the layer is idle this step
        masks = np.zeros((T, L, N), dtype=bool)
        t_idx, l_idx = np.nonzero(cols >= 0)
        masks[t_idx, l_idx, cols[t_idx, l_idx]] = True
    else:
        density = draw(st.floats(0.0, 1.0))
        # a skewed popularity so that caching matters
        pop = rng.random(N) ** 2
        masks = rng.random((T, L, N)) < density * pop / max(pop.max(), 1e-9)
    cap = draw(st.one_of(st.integers(0, N + 1), st.lists(st.integers(0, N + 1), min_size=L, max_size=L)))
    return masks, cap


def per_layer_hits(name, masks, cap, **kw):
    c = build(name, masks, cap, **kw)
    return np.array([c.step(m).sum(axis=1) for m in masks]).sum(axis=0)


@pytest.mark.parametrize("name", POLICIES)
@given(data=streams())
@settings(max_examples=60)
def test_invariants(name, data):
    masks, cap = data
    c = build(name, masks, cap)
    if name == "pinned":
        c.prime(np.random.default_rng(0).random(masks.shape[1:]))
    total = 0
    for m in masks:
        before = c.resident.copy()
        hits = c.step(m)
        total += int(m.sum())
        np.testing.assert_array_equal(hits, m & before)          # hits counted before insertions
        occ = c.occupancy()
        assert (occ <= c.capacity).all()                           # occupancy <= capacity
        keep = m | getattr(c, "pinned", np.zeros_like(m))
        fits = keep.sum(axis=1) <= c.capacity
        assert (c.resident[fits] | ~m[fits]).all()                 # a set that fits is resident afterwards
    assert c.n_hit + c.n_miss == c.n_req == total                  # hits + misses = accesses


@pytest.mark.parametrize("name", [n for n in POLICIES if n != "pinned"])
@given(data=streams(single=True))
@settings(max_examples=60)
def test_single_column_steps_equal_textbook_reference(name, data):
    masks, cap = data
    _check_against_reference(name, masks, cap)


@pytest.mark.parametrize("name", [n for n in POLICIES if n != "pinned"])
@given(data=streams())
@settings(max_examples=60)
def test_set_steps_equal_reference(name, data):
    masks, cap = data
    _check_against_reference(name, masks, cap)


def ref_maker(name, capv, masks):
    """``layer -> reference cache`` for policy ``name`` (Belady's future: the steps of ``masks``)."""
    T = masks.shape[0]
    return {
        "lru": lambda l: ref.LRURef(capv[l]),
        "fifo": lambda l: ref.FIFORef(capv[l]),
        "lfu": lambda l: ref.LFURef(capv[l]),
        "none": lambda l: ref.LRURef(0),
        "s3fifo": lambda l: ref.S3FIFORef(capv[l]),
        "s3fifo-lcs": lambda l: ref.S3FIFORef(capv[l], lcs=True),
        "arc": lambda l: ref.ARCRef(capv[l]),
        "window": lambda l: ref.WindowRef(capv[l], 5),
        "belady": lambda l: ref.BeladyRef(capv[l], [set(np.flatnonzero(masks[t, l])) for t in range(T)]),
    }[name]


def _check_against_reference(name, masks, cap):
    T, L, N = masks.shape
    capv = caches.as_capacity(cap, L, N)
    expected = ref.run_reference(ref_maker(name, capv, masks), masks)
    c = build(name, masks, cap)
    for t in range(T):
        hits = c.step(masks[t])
        for layer in range(L):
            assert set(np.flatnonzero(hits[layer])) == expected[t][layer], f"step {t}, layer {layer}"


@given(data=streams())
@settings(max_examples=60)
def test_pinned_equals_reference(data):
    masks, cap = data
    T, L, N = masks.shape
    c = build("pinned", masks, cap, hot_fraction=0.5)
    c.prime(np.random.default_rng(1).random((L, N)))
    capv = c.capacity
    expected = ref.run_reference(lambda l: ref.PinnedRef(capv[l], np.flatnonzero(c.pinned[l])), masks)
    for t in range(T):
        hits = c.step(masks[t])
        for layer in range(L):
            assert set(np.flatnonzero(hits[layer])) == expected[t][layer]


@pytest.mark.parametrize("name", ["lru", "belady"])
@given(data=streams())
@settings(max_examples=60)
def test_hits_never_decrease_with_capacity(name, data):
    masks, _ = data
    N = masks.shape[2]
    prev = None
    for cap in range(0, N + 2):
        h = per_layer_hits(name, masks, cap)
        if prev is not None:
            assert (h >= prev).all(), f"capacity {cap}: {h} < {prev}"
        prev = h


@given(data=streams())
@settings(max_examples=80)
def test_opt_beats_every_policy(data):
    masks, cap = data
    opt = per_layer_hits("belady", masks, cap)
    for name in POLICIES:
        if name == "belady":
            continue
        kw = {}
        h = per_layer_hits(name, masks, cap, **kw)
        assert (opt >= h).all(), f"{name}: {h} > OPT {opt}"


@given(data=streams())
@settings(max_examples=30)
def test_none_has_no_hits(data):
    masks, cap = data
    assert per_layer_hits("none", masks, cap).sum() == 0


@pytest.mark.parametrize("name", [n for n in POLICIES if n != "none"])
def test_dense_masks_with_full_capacity_only_compulsory_misses(name):
    T, L, N = 7, 3, 10
    masks = np.ones((T, L, N), dtype=bool)
    c = build(name, masks, N)
    misses = [int((m & ~c.step(m)).sum()) for m in masks]
    assert misses == [L * N] + [0] * (T - 1)


def test_set_larger_than_capacity_keeps_highest_indices_under_lru():
    c = caches.make("lru", n_layers=1, n_columns=8, capacity=3)
    c.step(np.array([[1, 1, 0, 0, 0, 0, 0, 0]], bool))
    hits = c.step(np.array([[1, 0, 1, 1, 1, 0, 0, 0]], bool))
    assert hits.tolist() == [[True] + [False] * 7]
    assert np.flatnonzero(c.resident[0]).tolist() == [2, 3, 4]  # all non-members out, then lowest indices


def test_belady_refuses_other_masks_and_missing_future():
    masks = np.zeros((3, 1, 4), dtype=bool)
    masks[:, 0, 1] = True
    c = caches.make("belady", n_layers=1, n_columns=4, capacity=1, future=masks)
    c.step(masks[0])
    other = masks[1].copy()
    other[0, 2] = True
    with pytest.raises(DipsimError, match="differs from the future"):
        c.step(other)
    blind = caches.make("belady", n_layers=1, n_columns=4, capacity=1)
    with pytest.raises(DipsimError, match="needs the whole access sequence"):
        blind.step(masks[0])
    blind.run_layer(0, masks[:, 0])
    with pytest.raises(DipsimError, match="whole access sequence in one call"):
        blind.run_layer(0, masks[:, 0])
    with pytest.raises(DipsimError, match="differ from the future"):
        caches.make("belady", n_layers=1, n_columns=4, capacity=1, future=masks).run_layer(0, masks[:2, 0])


def test_bad_names_and_parameters():
    with pytest.raises(DipsimError, match="unknown cache policy 'lru2'; allowed: arc, belady, fifo, lfu, lru"):
        caches.make("lru2", n_layers=1, n_columns=4, capacity=1)
    with pytest.raises(DipsimError, match="has no parameter 'size'"):
        caches.make("lru", n_layers=1, n_columns=4, capacity=1, size=3)
    with pytest.raises(DipsimError, match="capacity must be >= 0"):
        caches.make("lru", n_layers=1, n_columns=4, capacity=-1)
    with pytest.raises(DipsimError, match="list of 2 ints"):
        caches.make("lru", n_layers=2, n_columns=4, capacity=[1, 2, 3])
    c = caches.make("lru", n_layers=2, n_columns=4, capacity=1)
    with pytest.raises(DipsimError, match="bool mask of shape"):
        c.step(np.zeros((2, 5), bool))


@pytest.mark.parametrize("name", POLICIES)
@given(data=streams())
@settings(max_examples=40)
def test_run_layer_equals_steps(name, data):
    """Driving each layer alone through all its steps (the layer-wise loops) gives exactly the hits,
    contents and counters of stepping all layers token by token."""
    masks, cap = data
    T, L, N = masks.shape
    a, b = build(name, masks, cap), build(name, masks, cap)
    if name == "belady":
        b = caches.make("belady", n_layers=L, n_columns=N, capacity=cap)   # its future: the masks themselves
    if name == "pinned":
        hot = np.random.default_rng(0).random((L, N))
        a.prime(hot)
        b.prime(hot)
    expected = np.array([a.step(m) for m in masks])
    for layer in range(L):
        np.testing.assert_array_equal(b.run_layer(layer, masks[:, layer]), expected[:, layer])
    np.testing.assert_array_equal(b.resident, a.resident)
    assert b.counters() == a.counters()
    assert b.t == a.t == T


def test_step_after_run_layer_is_refused():
    c = caches.make("lru", n_layers=2, n_columns=4, capacity=2)
    c.run_layer(0, np.ones((3, 4), bool))
    with pytest.raises(DipsimError, match="either by step"):
        c.step(np.ones((2, 4), bool))


@pytest.mark.parametrize("lcs", [False, True])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(16, 96), cap_share=st.floats(0.05, 0.95))
@example(seed=0, n=64, cap_share=25 / 64)   # the case: 1,283 requests differed before the fix
@settings(max_examples=30, deadline=None)
def test_s3fifo_ghost_ring_survives_wrap_around(lcs, seed, n, cap_share):
    """A long uniform stream over few ids fills and compacts the ghost ring many times while its
    tail is away from slot 0 (the compaction once overwrote entries it had not read yet); the
    compiled kernel still equals the plain reference request for request, and the ring holds
    exactly the ids marked as ghosts."""
    C = max(1, int(cap_share * n))
    ids = np.random.default_rng(seed).integers(0, n, size=6000)
    c = caches.make("s3fifo-lcs" if lcs else "s3fifo", n_layers=1, n_columns=n, capacity=C)
    hits = c.run(ids, 0)
    r = ref.S3FIFORef(C, lcs=lcs)
    expected = np.array([bool(r.step([int(x)])) for x in ids])
    np.testing.assert_array_equal(hits, expected)
    GR = c.gq.shape[1]
    live = {int(c.gq[0, i % GR]) for i in range(c.g_ctr[0, 1], c.g_ctr[0, 0])
            if c.ghost_of[0, c.gq[0, i % GR]] == c.gstamp[0, i % GR]}
    assert live == set(np.flatnonzero(c.ghost_of[0] >= 0).tolist()) == set(r.G)


@pytest.mark.parametrize("start", [2**24 - 10, 2**40])
@pytest.mark.parametrize("path", ["run", "set", "sequential"])
def test_lfu_counts_past_the_old_step_limit(start, path):
    """LFU keeps its counts and its steps of last use apart, so a layer may run past 2^24 steps
    (the bound while one integer, ``freq * 2^24 + step``, held both: 16.7 M requests, less than a
    7B trace's per-request stream). From a clock just below that bound and far past it, requests
    and one-column steps of both step models equal the plain reference, on a stream where a count
    made before the crossing must outweigh a smaller one made after it (the old encoding read the
    later steps as an extra count and evicted column 0), then on a long Zipf stream."""
    rng = np.random.default_rng(5)
    N, C = 48, 2
    ids = np.concatenate([[0] * 10, [1] * 6, [2, 0], (rng.zipf(1.4, 3000) - 1) % N]).astype(np.int64)
    model = "sequential" if path == "sequential" else "set"
    c = caches.make("lfu", n_layers=1, n_columns=N, capacity=C, step_model=model)
    c.clock[:] = start
    r = ref.LFURef(C)
    if path == "run":
        hits = c.run(ids)
    else:
        one_hot = np.zeros((len(ids), 1, N), dtype=bool)
        one_hot[np.arange(len(ids)), 0, ids] = True
        hits = np.array([c.step(m)[0].any() for m in one_hot])
    assert hits.tolist() == [bool(r.step([int(x)])) for x in ids]
    assert set(np.flatnonzero(c.resident[0])) == set(r.contents())
    assert c.t == start + len(ids)
