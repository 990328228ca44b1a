"""arc: Adaptive Replacement Cache (Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead
Replacement Cache", FAST 2003, Fig. 4).

Two LRU lists of cached columns, T1 (seen once recently) and T2 (seen at least twice), each with
a ghost list of ids it recently evicted, B1 and B2; c = capacity, p = T1's adaptive target size.

    x in T1 or T2 (hit):   move x to T2's MRU end
    x in B1:  p = min(c, p + max(|B2| / |B1|, 1)); REPLACE(x); move x from B1 to T2's MRU end
    x in B2:  p = max(0, p - max(|B1| / |B2|, 1)); REPLACE(x); move x from B2 to T2's MRU end
    x nowhere:
        if |T1| + |B1| = c:  if |T1| < c: drop B1's LRU; REPLACE(x)  else: drop T1's LRU (no ghost)
        elif |T1| + |T2| + |B1| + |B2| >= c:  if that total = 2c: drop B2's LRU;  REPLACE(x)
        put x at T1's MRU end
    REPLACE(x): if |T1| > 0 and (|T1| > p or (x in B2 and |T1| = p)) or |T2| = 0:
                    move T1's LRU to B1's MRU end      else: move T2's LRU to B2's MRU end

p is a real number and the ratios real divisions, as in the paper and libCacheSim's ARC.c. The
"or |T2| = 0" guards the one case the paper leaves open (p = c with T1 full), as libCacheSim does.
Evictions happen only once the cache is full (before that there are no ghosts, so the paper's
conditions reduce to this).

Set steps (see ``caches.base``): the step's hits are taken first, moved to T2's MRU end in
ascending index order, then its misses in ascending index order as above, with the step's own
columns (hits and misses already inserted) in use: REPLACE takes the other list's LRU when the
chosen list's LRU is in use (in-use columns sit at the MRU ends, so the LRU end is in use only
when the whole list is). A miss that finds every cached column in use is streamed through: it is
not cached and changes nothing (p and the ghosts included). With single-column steps, the
``sequential`` step model and ``cache.run`` nothing is ever in use and this is the paper's ARC;
``reference.ARCRef`` is the plain per-request version it is checked against.
"""
from __future__ import annotations

import numpy as np

from common.jit import njit, njit_inline as _inline

from ..kernels import scratch
from ._lists import insert_after, unlink
from ._state_arrays import StateArrayCache, select_cached
from .base import register_cache

T1, T2, B1, B2 = 1, 2, 3, 4   # loc values (0: nowhere); list j's sentinel is slot N + j - 1


@_inline
def _take(prv, nxt, cnt, loc, x):
    """``x`` out of its list."""
    unlink(prv, nxt, x)
    w = loc[x]
    loc[x] = 0
    cnt[w - 1] -= 1


@_inline
def _put(prv, nxt, cnt, loc, x, to, N):
    """``x`` (in no list) at the MRU end of list ``to``."""
    insert_after(prv, nxt, x, N + to - 1)      # list j's sentinel is slot N + j - 1
    loc[x] = to
    cnt[to - 1] += 1


@njit
def _arc_segment(ids, inuse, hits, C, loc, prv, nxt, cnt, pp, l):
    """Requests ``ids`` of layer ``l`` in order (``inuse``: columns eviction must pass over; the
    state: that layer's rows, ``pp`` the per-layer targets p). Fills ``hits``; returns evictions.
    Every eviction goes through one place, and so does every insertion of ``x``: that keeps the
    inlined list moves free of reference counting (see ``caches._lists``)."""
    N = loc.shape[0]
    s1, s2, sb1, sb2 = N, N + 1, N + 2, N + 3
    p = pp[l]
    n_evict = 0
    for i in range(ids.shape[0]):
        x = ids[i]
        w = loc[x]
        hits[i] = w == T1 or w == T2
        if not hits[i]:
            if C == 0:
                continue
            full = cnt[0] + cnt[1] >= C
            if full:
                ok1 = cnt[0] > 0 and not inuse[prv[s1]]
                ok2 = cnt[1] > 0 and not inuse[prv[s2]]
                if not (ok1 or ok2):
                    continue                # rare[arc]: every cached column is in use: streamed through
            replace = False
            victim, to = -1, 0              # the column evicted and its ghost list (0: none)
            if w == B1:
                p = min(float(C), p + max(cnt[3] / cnt[2], 1.0))   # rare[arc]: a hit in B1: p grows
                replace = full
            elif w == B2:
                p = max(0.0, p - max(cnt[2] / cnt[3], 1.0))   # rare[arc]: a hit in B2: p shrinks
                replace = full
            elif full:
                if cnt[0] + cnt[2] >= C:
                    if cnt[2] > 0:
                        _take(prv, nxt, cnt, loc, prv[sb1])     # rare[arc]: |T1| + |B1| = c: B1's LRU dropped
                        replace = True
                    else:                   # T1 holds the whole cache: its LRU goes, leaving no ghost
                        victim = prv[s1]                        # rare[arc]: T1 holds the whole cache
                else:
                    if cnt[0] + cnt[1] + cnt[2] + cnt[3] >= 2 * C and cnt[3] > 0:
                        _take(prv, nxt, cnt, loc, prv[sb2])     # rare[arc]: the directory is full: B2's LRU dropped
                    replace = True
            if replace:
                t1 = cnt[0]
                from1 = (t1 > 0 and (t1 > p or (w == B2 and t1 == p))) or cnt[1] == 0
                if from1 and not (cnt[0] > 0 and not inuse[prv[s1]]):
                    from1 = False           # rare[arc]: T1's LRU is in use this step: T2's goes
                elif not from1 and not (cnt[1] > 0 and not inuse[prv[s2]]):
                    from1 = True            # rare[arc]: T2's LRU is in use this step: T1's goes
                victim, to = (prv[s1], B1) if from1 else (prv[s2], B2)
            if victim >= 0:
                n_evict += 1
                _take(prv, nxt, cnt, loc, victim)
                if to != 0:
                    _put(prv, nxt, cnt, loc, victim, to, N)
        if w != 0:                          # a hit or a ghost goes to T2, a new column to T1
            _take(prv, nxt, cnt, loc, x)
        _put(prv, nxt, cnt, loc, x, T2 if w != 0 else T1, N)
    pp[l] = p
    return n_evict


@njit
def _arc_row(mask, hits, C, sequential, loc, prv, nxt, cnt, pp, l, idle, ids, h):
    """One step of layer ``l``; returns ``(evictions, columns selected, hits)``. ``idle``
    (all False), ``ids`` and ``h``: scratch rows."""
    N = mask.shape[0]
    m = 0
    if sequential:
        for n in range(N):
            ids[m] = n
            m += mask[n]
        e = _arc_segment(ids[:m], idle, h, C, loc, prv, nxt, cnt, pp, l)
        nh = 0
        hits[:] = False
        for j in range(m):
            hits[ids[j]] = h[j]
            nh += h[j]
        return e, m, nh
    nh = 0
    for n in range(N):                  # the hits first, in ascending index order
        hit = mask[n] and (loc[n] == T1 or loc[n] == T2)
        hits[n] = hit
        ids[nh] = n
        nh += hit
    _arc_segment(ids[:nh], idle, h, C, loc, prv, nxt, cnt, pp, l)
    for n in range(N):                  # then the misses, the step's columns in use
        ids[m] = n
        m += mask[n] and not hits[n]
    e = _arc_segment(ids[:m], mask, h, C, loc, prv, nxt, cnt, pp, l)
    return e, nh + m, nh


@njit
def _arc_rows(mask, hits, sel, hc, cap, sequential, loc, prv, nxt, cnt, pp, l0, l1):
    N = mask.shape[1]
    idle = np.zeros(N, np.bool_)
    ids = np.empty(N, np.int64)
    h = np.empty(N, np.bool_)
    n_evict = 0
    for l in range(l0, l1):
        e, ns, nh = _arc_row(mask[l], hits[l], cap[l], sequential, loc[l], prv[l], nxt[l], cnt[l], pp, l, idle, ids,
                             h)
        sel[l] = ns
        hc[l] = nh
        n_evict += e
    return n_evict


@njit
def _arc_requests(ids, hits, C, loc, prv, nxt, cnt, pp, l):
    """A stream of single-column requests to layer ``l`` (``cache.run``); returns evictions."""
    return _arc_segment(ids, np.zeros(loc.shape[0], np.bool_), hits, C, loc, prv, nxt, cnt, pp, l)


@njit
def _arc_layer(code, params, scores, k, masks, hits, sel, hc, C, sequential, loc, prv, nxt, cnt, pp, l):
    """Steps of layer ``l`` through the rows of ``masks``; with ``code >= 0`` each mask is first
    chosen from ``scores`` and the cache contents (``kernels.select_row``)."""
    T, N = masks.shape
    work, fav, hist = scratch(N)
    res = np.empty(N, np.bool_)
    idle = np.zeros(N, np.bool_)
    ids = np.empty(N, np.int64)
    h = np.empty(N, np.bool_)
    n_evict = 0
    for i in range(T):
        if code >= 0:
            select_cached(code, params, scores[i], loc, k, masks[i], res, work, fav, hist)
        e, ns, nh = _arc_row(masks[i], hits[i], C, sequential, loc, prv, nxt, cnt, pp, l, idle, ids, h)
        sel[i] = ns
        hc[i] = nh
        n_evict += e
    return n_evict


@register_cache("arc")
class ARC(StateArrayCache):
    KERNELS = (_arc_rows, _arc_layer, _arc_requests)

    def __init__(self, n_layers, n_columns, capacity, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        L, N = self.L, self.N
        self.loc = np.zeros((L, N), dtype=np.int8)
        self.prv = np.empty((L, N + 4), dtype=np.int64)    # four lists, sentinels at N..N+3
        self.nxt = np.empty((L, N + 4), dtype=np.int64)
        self.prv[:, N:] = np.arange(N, N + 4)
        self.nxt[:, N:] = np.arange(N, N + 4)
        self.cnt = np.zeros((L, 4), dtype=np.int64)        # |T1|, |T2|, |B1|, |B2|
        self.p = np.zeros(L, dtype=np.float64)

    def _rows(self):
        return self.loc, self.prv, self.nxt, self.cnt

    def _shared(self):
        return (self.p,)
