"""Compiled step of the priority-ordered cache policies (lru, fifo, lfu, belady, pinned).

Each of these policies is an eviction order: every resident column has a priority ``prio`` and
the victim is the column with the smallest key ``prio * N + index`` (the index breaks ties, lowest
first). A step of one layer is one pass over its columns -- hits, priority updates, insertion of
misses, marking the eviction candidates -- then, if the layer is over capacity, a bisection for
the threshold priority and one eviction pass. It is a numba kernel over a range of layers rather
than numpy array expressions: numpy's masked int64 operations cost 5-10 ns per element on the
2-core development machines, several times these loops, which are written to vectorize. The
kernel releases the GIL, so replay runs disjoint layer ranges in parallel threads.

Priorities (``kind``):
    LRU    prio = step of last use                        (touched columns: t)
    FIFO   prio = step of insertion                       (misses: t)
    LFU    prio = freq * S + step of last use             (hit: freq + 1; miss: freq = 1)
    BELADY prio = T + 1 - next use                        (farthest next use = smallest)
"""
from __future__ import annotations

import numpy as np

try:
    import numba

    njit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover
    def njit(f):
        return f

LRU, FIFO, LFU, BELADY = 0, 1, 2, 3
_BLOCK = 512
LFU_STEPS = 1 << 24  # S: bound on steps folded into LFU priorities (16.7 M tokens)


@njit
def _count_le(prio, sel, l, N, v):
    c = 0
    for n in range(N):
        c += sel[n] & (prio[l, n] <= v)
    return c


@njit
def _evict_smallest(res, prio, sel, l, N, e):
    """Evict from row ``l`` the ``e`` columns with the smallest keys ``prio * N + index`` among those
    with ``sel[n]``; ``0 < e < number of candidates``.

    The threshold priority is found by bisection on the priority value, each probe a branch-free
    count over the row (these loops vectorize; a per-element histogram or compaction does not and
    is several times slower here). Columns below the threshold go in one pass; among the
    threshold's ties the lowest indices go first.
    """
    big = np.int64(1) << 62
    lo = big
    hi = -big
    for n in range(N):
        c = sel[n]
        p = prio[l, n]
        lo = min(lo, p if c else big)
        hi = max(hi, p if c else -big)
    # smallest tau with count(prio <= tau) >= e: gallop up from the oldest priority (victims are
    # usually among the few oldest), then bisect
    step = 1
    while lo < hi and _count_le(prio, sel, l, N, lo) < e:
        lo_next = lo + step
        if lo_next >= hi or _count_le(prio, sel, l, N, lo_next) >= e:
            hi = min(hi, lo_next)
            lo = lo + 1
            break
        lo = lo_next + 1
        step *= 2
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if _count_le(prio, sel, l, N, mid) >= e:
            hi = mid
        else:
            lo = mid + 1
    tau = lo
    need = e - _count_le(prio, sel, l, N, tau - 1)
    for n in range(N):
        res[l, n] = res[l, n] & ((sel[n] & (prio[l, n] < tau)) ^ True)
    # ties at tau: the lowest indices first. Count them per block (vectorized) up to the block where
    # `need` is reached, evict whole blocks before it in one pass, then walk that block alone.
    start = 0
    while need > 0 and start < N:
        stop = min(start + _BLOCK, N)
        c = 0
        for n in range(start, stop):
            c += sel[n] & (prio[l, n] == tau)
        if c <= need:
            for n in range(start, stop):
                res[l, n] = res[l, n] & ((sel[n] & (prio[l, n] == tau)) ^ True)
            need -= c
        else:
            for n in range(start, stop):
                if need == 0:
                    break
                if sel[n] and prio[l, n] == tau:
                    res[l, n] = False
                    need -= 1
        start = stop


@njit
def keyed_rows(kind, mask, res, prio, evictable, cap, t, t1, nxt, hits, sel_count, hit_count, cand, l0, l1):
    """One step for layers ``l0:l1``; returns evictions of previously resident columns.

    ``nxt`` (BELADY only): next use after ``t`` of every member of rows ``l0:l1``, row-major, and
    ``t1`` = T + 1 (T: the number of steps of the future; "never used again" is T + 1).
    ``cand`` (bool [N]) is scratch space.
    """
    N = mask.shape[1]
    n_evict = 0
    pos = 0
    for l in range(l0, l1):
        occ = 0
        ns = 0
        nh = 0
        # touch: hits, priorities, insertion; mark eviction candidates (resident, evictable, not in
        # this step's set). One loop per kind, so that each loop is branch-free and vectorizes.
        if kind == LRU:
            for n in range(N):
                m = mask[l, n]
                prio[l, n] = t if m else prio[l, n]
        elif kind == FIFO:
            for n in range(N):
                prio[l, n] = t if (mask[l, n] & (res[l, n] ^ True)) else prio[l, n]
        elif kind == LFU:
            for n in range(N):
                if mask[l, n]:
                    prio[l, n] = ((prio[l, n] // LFU_STEPS + 1) if res[l, n] else 1) * LFU_STEPS + t
        else:
            for n in range(N):
                if mask[l, n]:
                    prio[l, n] = t1 - nxt[pos]
                    pos += 1
        k = 0
        for n in range(N):
            m = mask[l, n]
            r = res[l, n]
            h = m & r
            hits[l, n] = h
            rn = r | m
            res[l, n] = rn
            c = r & (m ^ True) & evictable[l, n]
            cand[n] = c
            occ += rn
            ns += m
            nh += h
            k += c
        sel_count[l] = ns
        hit_count[l] = nh
        e = occ - cap[l]
        if e <= 0:
            continue
        if e < k:
            _evict_smallest(res, prio, cand, l, N, e)
            n_evict += e
            continue
        for n in range(N):  # every candidate goes
            res[l, n] = res[l, n] & (cand[n] ^ True)
        n_evict += k
        e -= k
        if e > 0:
            # the set is larger than the capacity: evict among the step's own columns, same order
            k2 = 0
            for n in range(N):
                c = mask[l, n] & evictable[l, n]
                cand[n] = c
                k2 += c
            before = 0
            for n in range(N):
                before += res[l, n] & hits[l, n]
            if e >= k2:
                for n in range(N):
                    res[l, n] = res[l, n] & (cand[n] ^ True)
            else:
                _evict_smallest(res, prio, cand, l, N, e)
            after = 0
            for n in range(N):
                after += res[l, n] & hits[l, n]
            n_evict += before - after
    return n_evict
