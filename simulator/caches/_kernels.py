"""Compiled step of the priority-ordered cache policies (lru, fifo, lfu, belady, pinned).

Each of these policies is an eviction order: every resident column has a priority ``prio`` and
the victim is the column with the smallest key ``(prio, index)`` (the index breaks ties, lowest
first; LFU puts its count first, see below). A step of one layer is one pass over its columns -- hits, priority updates, insertion of
misses, marking the eviction candidates -- then, if the layer is over capacity, a bisection for
the threshold priority and one eviction pass (``keyed_row``). It is a numba kernel rather than
numpy array expressions: numpy's masked int64 operations cost 5-10 ns per element on the 2-core
development machines, several times these loops, which are written to vectorize. Drivers step
all layers once (``keyed_rows``: ``cache.step``) or one layer through many steps (``keyed_layer``,
and ``keyed_layer_select``, which also picks each step's mask: ``cache.run_layer``). They release
the GIL, so replay runs disjoint layers in parallel threads.

Priorities (``kind``):
    LRU    prio = step of last use                        (touched columns: t)
    FIFO   prio = step of insertion                       (misses: t)
    LFU    prio = step of last use, and a count ``freq``  (hit: freq + 1; miss: freq = 1)
    BELADY prio = T + 1 - next use                        (farthest next use = smallest)

LFU's order is ``(freq, prio, index)``, its two parts in two arrays (``freq``; every other kind
passes a row of width 0). They once shared one number, ``freq * 2^24 + step``, which capped a
layer at 2^24 steps; apart, neither bounds the other, and the eviction finds the threshold
frequency first, then among its ties the threshold step (``_evict_least_frequent``: on a 7B-class
layer with evictions, 3x faster than one bisection over the folded values). After the
per-request path LFU's ``prio`` holds stamps in the order of the steps of last use rather than
the steps themselves (``caches._lfu.lfu_store``), which is all the order needs.
"""
from __future__ import annotations

import numpy as np

from common.jit import njit

from ..kernels import scratch, select_row

LRU, FIFO, LFU, BELADY = 0, 1, 2, 3
_BLOCK = 512


@njit
def _count_le(prio, sel, N, v):
    c = 0
    for n in range(N):
        c += sel[n] & (prio[n] <= v)
    return c


@njit
def _threshold(prio, sel, N, e):
    """The smallest ``tau`` with at least ``e`` of the columns with ``sel[n]`` at ``prio <= tau``
    (``0 < e <= number of candidates``).

    Found by bisection on the priority value, each probe a branch-free count over the row (these
    loops vectorize; a per-element histogram or compaction does not and is several times slower
    here).
    """
    big = np.int64(1) << 62
    lo = big
    hi = -big
    for n in range(N):
        c = sel[n]
        p = prio[n]
        lo = min(lo, p if c else big)
        hi = max(hi, p if c else -big)
    # smallest tau with count(prio <= tau) >= e: gallop up from the oldest priority (victims are
    # usually among the few oldest), then bisect
    step = 1
    while lo < hi and _count_le(prio, sel, N, lo) < e:
        lo_next = lo + step
        if lo_next >= hi or _count_le(prio, sel, N, lo_next) >= e:
            hi = min(hi, lo_next)
            lo = lo + 1
            break
        lo = lo_next + 1
        step *= 2
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if _count_le(prio, sel, N, mid) >= e:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit
def _evict_smallest(res, prio, sel, N, e):
    """Evict from a layer (rows ``res``, ``prio``) the ``e`` columns with the smallest keys
    ``(prio, index)`` among those with ``sel[n]``; ``0 < e < number of candidates``.

    Columns below the threshold priority (:func:`_threshold`) go in one pass; among the
    threshold's ties the lowest indices go first.
    """
    tau = _threshold(prio, sel, N, e)
    need = e - _count_le(prio, sel, N, tau - 1)
    for n in range(N):
        res[n] = res[n] & ((sel[n] & (prio[n] < tau)) ^ True)
    # ties at tau: the lowest indices first. Count them per block (vectorized) up to the block where
    # `need` is reached, evict whole blocks before it in one pass, then walk that block alone.
    start = 0
    while need > 0 and start < N:
        stop = min(start + _BLOCK, N)
        c = 0
        for n in range(start, stop):
            c += sel[n] & (prio[n] == tau)
        if c <= need:
            for n in range(start, stop):
                res[n] = res[n] & ((sel[n] & (prio[n] == tau)) ^ True)
            need -= c
        else:
            for n in range(start, stop):        # rare[lru, fifo, lfu, belady, pinned, window]: ties in a block
                if need == 0:
                    break
                if sel[n] and prio[n] == tau:
                    res[n] = False
                    need -= 1
        start = stop


@njit
def _evict_least_frequent(res, freq, prio, sel, N, e):
    """LFU's eviction: as :func:`_evict_smallest` with the keys ``(freq, prio, index)``. The
    columns below the threshold frequency go in one pass; among its ties (``sel`` is narrowed to
    them) the ``(prio, index)`` order decides."""
    f = _threshold(freq, sel, N, e)
    need = e
    tie = 0
    for n in range(N):
        c = sel[n]
        below = c & (freq[n] < f)
        res[n] = res[n] & (below ^ True)
        need -= below
        c = c & (freq[n] == f)
        sel[n] = c
        tie += c
    if need < tie:
        _evict_smallest(res, prio, sel, N, need)    # rare[lfu]: ties in frequency: least recent first
    else:
        for n in range(N):
            res[n] = res[n] & (sel[n] ^ True)


@njit
def _evict(kind, res, freq, prio, sel, N, e):
    """Evict the ``e`` first of the columns with ``sel`` in the order of ``kind``."""
    if kind == LFU:
        _evict_least_frequent(res, freq, prio, sel, N, e)
    else:
        _evict_smallest(res, prio, sel, N, e)


@njit
def keyed_row(kind, mask, res, prio, freq, evictable, cap, t, t1, nxt, pos, hits, cand):
    """One step of one layer (all arguments but the scalars are that layer's rows ``[N]``;
    ``freq``: LFU's counts, width 0 for the other kinds).

    ``nxt`` (BELADY only): next use after ``t`` of every column of the step, in index order from
    ``nxt[pos]`` on; ``t1`` = T + 1 ("never used again"). ``cand`` is scratch space. Returns
    ``(evictions of previously resident columns, columns selected, hits, next pos)``.
    """
    N = mask.shape[0]
    n_evict = 0
    occ = 0
    ns = 0
    nh = 0
    # touch: hits, priorities, insertion; mark eviction candidates (resident, evictable, not in
    # this step's set). One loop per kind, so that each loop is branch-free and vectorizes.
    if kind == LRU:
        pass                # fused into the pass below
    elif kind == FIFO:
        for n in range(N):
            prio[n] = t if (mask[n] & (res[n] ^ True)) else prio[n]
    elif kind == LFU:
        for n in range(N):
            if mask[n]:
                freq[n] = (freq[n] + 1) if res[n] else 1
    else:
        for n in range(N):
            if mask[n]:
                prio[n] = t1 - nxt[pos]
                pos += 1
    k = 0
    lru = kind == LRU or kind == LFU      # both keep the step of last use
    for n in range(N):
        m = mask[n]
        r = res[n]
        h = m & r
        hits[n] = h
        rn = r | m
        res[n] = rn
        c = r & (m ^ True) & evictable[n]
        cand[n] = c
        occ += rn
        ns += m
        nh += h
        k += c
        prio[n] = t if (m & lru) else prio[n]
    e = occ - cap
    if e <= 0:
        return n_evict, ns, nh, pos
    if e < k:
        _evict(kind, res, freq, prio, cand, N, e)
        return n_evict + e, ns, nh, pos
    for n in range(N):  # every candidate goes
        res[n] = res[n] & (cand[n] ^ True)
    n_evict += k
    e -= k
    if e > 0:
        # the set is larger than the capacity: evict among the step's own columns, same order
        k2 = 0
        for n in range(N):
            c = mask[n] & evictable[n]
            cand[n] = c
            k2 += c
        before = 0
        for n in range(N):
            before += res[n] & hits[n]
        if e >= k2:
            for n in range(N):                      # rare[none]: the whole set streams through
                res[n] = res[n] & (cand[n] ^ True)
        else:
            _evict(kind, res, freq, prio, cand, N, e)   # rare[lru, fifo, lfu, belady, pinned, window]: set > capacity
        after = 0
        for n in range(N):
            after += res[n] & hits[n]
        n_evict += before - after
    return n_evict, ns, nh, pos


@njit
def keyed_rows(kind, mask, res, prio, freq, evictable, cap, t, t1, nxt, hits, sel_count, hit_count, cand, l0, l1):
    """One step of layers ``l0:l1`` (``[L, N]`` arrays); returns evictions of resident columns."""
    n_evict = 0
    pos = 0
    for l in range(l0, l1):
        e, ns, nh, pos = keyed_row(kind, mask[l], res[l], prio[l], freq[l], evictable[l], cap[l], t, t1, nxt, pos,
                                   hits[l], cand)
        sel_count[l] = ns
        hit_count[l] = nh
        n_evict += e
    return n_evict


@njit
def keyed_layer(kind, masks, res, prio, freq, evictable, cap, t0, t1, nxt, hits, sel_count, hit_count):
    """Steps ``t0, t0 + 1, ...`` of one layer with the masks ``[T, N]`` (rows of the layer's state);
    fills ``hits [T, N]`` and the per-step counts; returns evictions of resident columns."""
    T, N = masks.shape
    cand = np.empty(N, np.bool_)
    n_evict = 0
    pos = 0
    for i in range(T):
        e, ns, nh, pos = keyed_row(kind, masks[i], res, prio, freq, evictable, cap, t0 + i, t1, nxt, pos, hits[i],
                                   cand)
        sel_count[i] = ns
        hit_count[i] = nh
        n_evict += e
    return n_evict


@njit
def keyed_layer_select(kind, code, params, scores, k, res, prio, freq, evictable, cap, t0, masks, hits, sel_count,
                       hit_count):
    """As :func:`keyed_layer`, choosing each step's mask from that step's ``scores`` and the cache
    contents just before it (``kernels.select_row`` rule ``code``): a cache-aware policy and its
    cache in one compiled pass over the tokens."""
    T, N = scores.shape
    cand = np.empty(N, np.bool_)
    work, fav, hist = scratch(N)
    nxt = np.zeros(0, np.int64)
    n_evict = 0
    for i in range(T):
        select_row(code, params, scores[i], res, k, masks[i], work, fav, hist)
        e, ns, nh, _ = keyed_row(kind, masks[i], res, prio, freq, evictable, cap, t0 + i, 0, nxt, 0, hits[i], cand)
        sel_count[i] = ns
        hit_count[i] = nh
        n_evict += e
    return n_evict


@njit
def next_uses(masks, t0):
    """For each selected entry of ``masks [T, N]`` (row-major), the step of the column's next use
    after it (``t0 + T + 1`` if none): what Belady needs from the future, in one backward pass."""
    T, N = masks.shape
    total = 0
    for i in range(T):
        for n in range(N):
            total += masks[i, n]
    out = np.empty(total, np.int64)
    nxt = np.full(N, t0 + T + 1, np.int64)
    pos = total
    for i in range(T - 1, -1, -1):
        cnt = 0
        for n in range(N):
            cnt += masks[i, n]
        pos -= cnt
        j = pos
        for n in range(N):
            if masks[i, n]:
                out[j] = nxt[n]
                nxt[n] = t0 + i
                j += 1
    return out
