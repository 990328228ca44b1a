"""Long request streams over few ids for the differential cache tests (``test_cache_differential``)
and the coverage check of the kernels' rare branches (``test_cache_coverage``): one ``Case`` names a
stream of ``caches.streams`` and a cache, ``check`` runs every compiled path of a policy on it
against the plain reference, and ``run_kernels`` runs the same paths without the reference (what
the coverage check traces)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from simulator import caches
from simulator.caches import reference as ref
from simulator.caches import streams

POLICIES = caches.names()


class Case(NamedTuple):
    kind: str      # a stream of caches.streams.KINDS
    n: int         # ids (columns)
    cap: int       # capacity, 1..n
    length: int    # requests
    seed: int
    max_set: int   # set steps: 1..max_set consecutive requests each

    def requests(self) -> np.ndarray:
        return streams.requests(self.kind, self.n, self.length, self.seed)

    def masks(self) -> np.ndarray:
        return streams.steps(self.requests(), self.n, self.max_set, self.seed)


@st.composite
def cases(draw, min_len: int, max_len: int) -> Case:
    """A stream of 16-300 ids and a capacity of 1 to all of them, half the time a fifth to a half
    of them (where S-FIFO's ghost queue turns over fastest: many ghost hits leave stale entries in
    its ring, which fills and is compacted); set steps up to about twice the capacity, so that some
    are larger than it."""
    n = draw(st.integers(16, 300))
    cap = draw(st.one_of(st.integers(1, n), st.integers(n // 5, n // 2)))
    return Case(kind=draw(st.sampled_from(streams.KINDS)), n=n, cap=cap, length=draw(st.integers(min_len, max_len)),
                seed=draw(st.integers(0, 2**32 - 1)), max_set=draw(st.integers(1, min(n, 2 * cap + 2))))


# Known hard cases, run by the differential tests as explicit examples and by the coverage check:
# each names the rare paths it reaches.
HARD_CASES = {
    # the stream: S3-FIFO's ghost ring fills and is compacted while its tail is away from slot 0
    "uniform-64-25": Case("uniform", 64, 25, 10_000, 0, 8),
    # the hot set moves: ARC's ghost hits in B1 and B2 move p both ways; S3-FIFO promotes to M
    "phases-128-40": Case("phases", 128, 40, 10_000, 1, 12),
    # many columns of equal count: LFU's ties broken by recency, in requests and in set steps
    "uniform-32-8": Case("uniform", 32, 8, 10_000, 2, 4),
    # sets of up to 60 columns in a cache of 10: the set-step rules for sets larger than the capacity
    "mixture-100-10": Case("mixture", 100, 10, 10_000, 3, 60),
    # loops longer than the cache, scans through a hot set, the smallest and the largest capacity
    "loop-200-60": Case("loop", 200, 60, 10_000, 4, 10),
    "scan-300-100": Case("scan", 300, 100, 10_000, 5, 30),
    "zipf-16-1": Case("zipf", 16, 1, 10_000, 6, 3),
    "loop-40-40": Case("loop", 40, 40, 10_000, 7, 40),
}


def make(name: str, case: Case, step_model: str = "set", future: np.ndarray | None = None):
    kw = {"future": future} if future is not None else {}
    c = caches.make(name, n_layers=1, n_columns=case.n, capacity=case.cap, step_model=step_model, **kw)
    if name == "pinned":
        c.prime(np.random.default_rng(case.seed).random((1, case.n)))
    return c


def reference(name: str, case: Case, cache, future: list[set[int]]):
    """The plain reference of policy ``name`` for ``cache`` (its capacity and, for pinned, its hot
    set); ``future``: Belady's, the steps it will be given."""
    C = int(cache.capacity[0])
    if name == "pinned":
        return ref.PinnedRef(C, np.flatnonzero(cache.pinned[0]).tolist())
    if name == "belady":
        return ref.BeladyRef(C, future)
    return {"lru": ref.LRURef, "fifo": ref.FIFORef, "lfu": ref.LFURef, "none": ref.LRURef, "arc": ref.ARCRef,
            "s3fifo": ref.S3FIFORef, "s3fifo-lcs": lambda C: ref.S3FIFORef(C, lcs=True),
            "window": lambda C: ref.WindowRef(C, cache.tokens)}[name](C)


def _same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{what}: {bad.size} of {want.size} hit flags differ from the reference, the first "
                           f"at {bad[0]} (got {bool(got.flat[bad[0]])})")


def _contents(cache) -> set[int]:
    return set(np.flatnonzero(cache.resident[0]).tolist())


def check(name: str, case: Case) -> None:
    """Every compiled path of policy ``name`` on ``case`` against the plain reference, flag by flag,
    and the contents at the end: ``run()`` and the ``sequential`` step model (``step`` and
    ``run_layer``) against the per-request reference on the steps' columns in ascending index
    order; the ``set`` step model (``step`` and ``run_layer``) against the reference's set steps."""
    masks = case.masks()
    rows, ids = np.nonzero(masks)                    # per step, ascending index: the sequential order
    # per request
    c = make(name, case)
    r = reference(name, case, c, [{int(x)} for x in ids])
    want = np.array([bool(r.step([int(x)])) for x in ids])
    _same(c.run(ids), want, f"{name} run()")
    assert _contents(c) == set(r.contents()), f"{name} run(): contents differ at the end"
    seq = make(name, case, "sequential")
    if hasattr(r, "sequential_step"):                # a window counts tokens, not requests: its own reference
        r = reference(name, case, seq, [])
        want = np.concatenate([[c in hit for c in np.flatnonzero(m)] for m in masks
                               for hit in [r.sequential_step(np.flatnonzero(m).tolist())]]).astype(bool)
    got = seq.run_layer(0, masks)
    _same(got[rows, ids], want, f"{name} sequential run_layer()")
    assert int(got.sum()) == int(want.sum()), f"{name} sequential run_layer(): hits off the requested columns"
    assert _contents(seq) == set(r.contents()), f"{name} sequential run_layer(): contents differ at the end"
    if name != "belady":                             # belady runs a layer's whole sequence at once
        seq = make(name, case, "sequential")
        got = np.array([seq.step(m[None])[0] for m in masks])
        _same(got[rows, ids], want, f"{name} sequential step()")
        assert _contents(seq) == set(r.contents()), f"{name} sequential step(): contents differ at the end"
    # set steps
    future = [set(np.flatnonzero(m).tolist()) for m in masks]
    c = make(name, case)
    r = reference(name, case, c, future)
    want = np.zeros_like(masks)
    for t, cols in enumerate(future):
        want[t, sorted(r.step(cols))] = True
    _same(c.run_layer(0, masks), want, f"{name} set run_layer()")
    assert _contents(c) == set(r.contents()), f"{name} set run_layer(): contents differ at the end"
    c = make(name, case, future=masks[:, None] if name == "belady" else None)
    _same(np.array([c.step(m[None])[0] for m in masks]), want, f"{name} set step()")
    assert _contents(c) == set(r.contents()), f"{name} set step(): contents differ at the end"


def run_kernels(name: str, case: Case) -> None:
    """The compiled paths of :func:`check` on ``case``, without the reference."""
    masks = case.masks()
    rows, ids = np.nonzero(masks)
    make(name, case).run(ids)
    for model in ("set", "sequential"):
        make(name, case, model).run_layer(0, masks)
    c = make(name, case, future=masks[:, None] if name == "belady" else None)
    for m in masks:
        c.step(m[None])
