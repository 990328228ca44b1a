"""s3fifo, s3fifo-lcs: S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction",
SOSP 2023), in the two versions of libCacheSim by the same authors.

Three FIFO queues: a small queue S (10% of the capacity), a main queue M (the rest) and a ghost
queue G remembering up to 90% of the capacity of recently evicted ids (no data).

    hit(x):    freq[x] = min(freq[x] + 1, 3)
    miss(x):   in_ghost = x in G; remove x from G
               while |S| + |M| >= C: evict()
               if in_ghost: push x to M's head
               [s3fifo-lcs only] elif nothing evicted yet and |S| >= |S|max: push x to M's head
               else: push x to S's head
               freq[x] = 0
    evict():   if |M| > |M|max or |S| == 0: evict_main() else: evict_small()
    evict_small(): repeat: t = S's tail, removed from S
                     if freq[t] >= 2: push t to M's head with freq 0      (accessed again: promote)
                     else: push t to G (dropping G's oldest beyond its size); done
    evict_main():  repeat: t = M's tail
                     if freq[t] >= 1: move t to M's head, freq[t] -= 1    (2-bit clock)
                     else: remove t; done

``s3fifo`` is the paper's algorithm, as in the paper's artifact (libCacheSim's S3FIFO.c up to
2024, kept upstream as S3FIFOv0.c): while the cache fills, S simply grows. ``s3fifo-lcs`` is
libCacheSim's later S3FIFO.c, which sends new columns to M once S is full and nothing has been
evicted yet, so that the first evictions find a full M rather than an oversized S.

|S|max = max(1, floor(0.1 C)) -- libCacheSim uses floor(0.1 C) and refuses objects as large as S,
which for unit-size columns would cache nothing below C = 20; |M|max = C - |S|max;
|G|max = floor(0.9 C).

Set steps (see ``caches.base``): hits are applied first, then the misses in ascending index
order. The step's columns are in use, so eviction passes over them (a used column at S's tail is
promoted to M; at M's tail it is moved to the head unchanged). When only the step's own columns
are left, the remaining misses are not cached. With single-column steps (and ``cache.run``) this
is exactly the algorithm above; ``reference.S3FIFORef`` is a plain per-request version checked
against this one.

The per-request queue logic is inherently sequential, so it runs as one compiled (numba) loop per
step over the layers' accessed columns, not as numpy array operations.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from common.jit import njit, njit_inline as _inline

from ..kernels import scratch
from ._state_arrays import StateArrayCache, select_cached
from .base import register_cache


@_inline
def _push(q, ctr, x):
    """``x`` in at the head of the ring queue ``q`` (``ctr``: its head and tail counters)."""
    q[ctr[0] % q.shape[0]] = x
    ctr[0] += 1


@_inline
def _pop(q, ctr):
    """The tail of the ring queue ``q``, taken out."""
    t = q[ctr[1] % q.shape[0]]
    ctr[1] += 1
    return t


@_inline
def _s3fifo_miss(n, inuse, pins, C, lcs, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr, ghost_of, g_valid,
                 g_clock, has_evicted, l):
    """Miss of column ``n`` in layer ``l``: evict until there is room (passing over columns with
    ``inuse``: the step's own, ``pins`` counts them in S and M), then insert. Returns evictions."""
    GR = gq.shape[0]
    n_evict = 0
    s_max = max(1, (C * 10) // 100)
    m_max = C - s_max
    g_max = (C * 90) // 100
    in_ghost = ghost_of[n] >= 0
    if in_ghost:
        ghost_of[n] = -1                # rare[s3fifo, s3fifo-lcs]: a ghost hit (x goes to M)
        g_valid[l] -= 1
    while True:
        s_len = s_ctr[0] - s_ctr[1]
        m_len = m_ctr[0] - m_ctr[1]
        if s_len + m_len < C:
            break
        if s_len + m_len - pins[0] - pins[1] <= 0:
            return n_evict          # rare[s3fifo, s3fifo-lcs]: only the step's own columns are left: n is not cached
        # ---- evict(): one victim t from M (2-bit clock) or S (promoting what was used again), or
        # none when S ran empty promoting
        t = -1
        main = (m_len > m_max or s_len == 0) and m_len - pins[1] > 0
        if main:
            while t < 0:
                c = _pop(mq, m_ctr)
                if inuse[c] or freq[c] >= 1:
                    if not inuse[c]:
                        freq[c] -= 1        # rare[s3fifo, s3fifo-lcs]: M's 2-bit clock reinserts a column
                    _push(mq, m_ctr, c)
                else:
                    t = c
        else:
            while t < 0 and s_ctr[0] - s_ctr[1] > 0:
                c = _pop(sq, s_ctr)
                if inuse[c] or freq[c] >= 2:
                    loc[c] = 2
                    if inuse[c]:
                        pins[0] -= 1        # rare[s3fifo, s3fifo-lcs]: a step's own column moves from S to M
                        pins[1] += 1
                    else:
                        freq[c] = 0         # rare[s3fifo, s3fifo-lcs]: accessed again in S: moves to M
                    _push(mq, m_ctr, c)
                else:
                    t = c
        if t < 0:
            continue
        loc[t] = 0
        freq[t] = 0
        n_evict += 1
        has_evicted[l] = True
        if not main and g_max > 0:
            # push to the ghost queue, compacting its ring when full: live entries move towards
            # the tail in ring order, so a write (tail + w) never passes the read (i >= tail + w)
            if g_ctr[0] - g_ctr[1] >= GR:
                w = g_ctr[1]            # rare[s3fifo, s3fifo-lcs]: the ghost ring is full: compaction
                for i in range(g_ctr[1], g_ctr[0]):
                    c = gq[i % GR]
                    st = gstamp[i % GR]
                    if ghost_of[c] == st:
                        gq[w % GR] = c
                        gstamp[w % GR] = st
                        w += 1
                g_ctr[0] = w
            g_clock[l] += 1
            gq[g_ctr[0] % GR] = t
            gstamp[g_ctr[0] % GR] = g_clock[l]
            g_ctr[0] += 1
            ghost_of[t] = g_clock[l]
            g_valid[l] += 1
            while g_valid[l] > g_max:
                c = gq[g_ctr[1] % GR]
                st = gstamp[g_ctr[1] % GR]
                g_ctr[1] += 1
                if ghost_of[c] == st:
                    ghost_of[c] = -1
                    g_valid[l] -= 1
    to_main = in_ghost
    if lcs and not has_evicted[l] and s_ctr[0] - s_ctr[1] >= s_max:
        to_main = True                  # rare[s3fifo-lcs]: S full before the first eviction: to M
    if to_main:
        loc[n] = 2
        _push(mq, m_ctr, n)
        pins[1] += 1
    else:
        loc[n] = 1
        _push(sq, s_ctr, n)
        pins[0] += 1
    freq[n] = 0
    return n_evict


@njit
def _s3fifo_row(mask, hits, C, lcs, sequential, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr, ghost_of,
                g_valid, g_clock, has_evicted, l, pins, idle):
    """One step of layer ``l``: ``mask``, ``hits`` and the queue state are that layer's rows;
    ``g_valid``, ``g_clock``, ``has_evicted`` are per-layer arrays indexed by ``l``. Returns
    ``(evictions, columns selected, hits)``. ``sequential``: the columns one request at a time.
    Scratch: ``pins`` (int64 [2]: the step's columns in S and M), ``idle`` (bool [N], all False)."""
    N = mask.shape[0]
    n_evict = 0
    pins[:] = 0
    ns = 0
    nh = 0
    if sequential:
        for n in range(N):
            h = False
            if mask[n]:
                ns += 1
                if loc[n] != 0:
                    h = True
                    nh += 1
                    if freq[n] < 3:
                        freq[n] += 1
                else:
                    pins[:] = 0
                    n_evict += _s3fifo_miss(n, idle, pins, C, lcs, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp,
                                            g_ctr, ghost_of, g_valid, g_clock, has_evicted, l)
            hits[n] = h
        return n_evict, ns, nh
    # hits: counted before insertions; their columns are pinned for the whole step
    for n in range(N):
        hits[n] = False
        ns += mask[n]
        if mask[n] and loc[n] != 0:
            hits[n] = True
            nh += 1
            if freq[n] < 3:
                freq[n] += 1
            pins[loc[n] - 1] += 1
    for n in range(N):
        if mask[n] and not hits[n]:
            n_evict += _s3fifo_miss(n, mask, pins, C, lcs, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr,
                                    ghost_of, g_valid, g_clock, has_evicted, l)
    return n_evict, ns, nh


@njit
def _s3fifo_requests(ids, hits, C, lcs, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr, ghost_of, g_valid,
                     g_clock, has_evicted, l):
    """A stream of single-column requests to layer ``l`` (``cache.run``); returns evictions."""
    idle = np.zeros(loc.shape[0], np.bool_)
    pins = np.zeros(2, np.int64)
    n_evict = 0
    for i in range(ids.shape[0]):
        x = ids[i]
        if loc[x] != 0:
            hits[i] = True
            if freq[x] < 3:
                freq[x] += 1
            continue
        hits[i] = False
        pins[0] = 0
        pins[1] = 0
        n_evict += _s3fifo_miss(x, idle, pins, C, lcs, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr, ghost_of,
                                g_valid, g_clock, has_evicted, l)
    return n_evict


@njit
def _s3fifo_rows(mask, hits, sel, hc, cap, sequential, lcs, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr,
                 ghost_of, g_valid, g_clock, has_evicted, l0, l1):
    n_evict = 0
    pins = np.zeros(2, np.int64)
    idle = np.zeros(mask.shape[1], np.bool_)
    for l in range(l0, l1):
        e, ns, nh = _s3fifo_row(mask[l], hits[l], cap[l], lcs, sequential, loc[l], freq[l], sq[l], s_ctr[l], mq[l],
                                m_ctr[l], gq[l], gstamp[l], g_ctr[l], ghost_of[l], g_valid, g_clock, has_evicted, l,
                                pins, idle)
        sel[l] = ns
        hc[l] = nh
        n_evict += e
    return n_evict


@njit
def _s3fifo_layer(code, params, scores, k, masks, hits, sel, hc, C, sequential, lcs, loc, freq, sq, s_ctr, mq,
                  m_ctr, gq, gstamp, g_ctr, ghost_of, g_valid, g_clock, has_evicted, l):
    """Steps of layer ``l`` through the rows of ``masks``; with ``code >= 0`` each mask is first
    chosen from ``scores`` and the cache contents (``kernels.select_row``)."""
    T, N = masks.shape
    work, fav, hist = scratch(N)
    res = np.empty(N, np.bool_)
    pins = np.zeros(2, np.int64)
    idle = np.zeros(N, np.bool_)
    n_evict = 0
    for i in range(T):
        if code >= 0:
            select_cached(code, params, scores[i], loc, k, masks[i], res, work, fav, hist)
        e, ns, nh = _s3fifo_row(masks[i], hits[i], C, lcs, sequential, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp,
                                g_ctr, ghost_of, g_valid, g_clock, has_evicted, l, pins, idle)
        sel[i] = ns
        hc[i] = nh
        n_evict += e
    return n_evict


@register_cache("s3fifo")
class S3FIFO(StateArrayCache):
    """The SOSP 2023 paper's S3-FIFO (libCacheSim's S3FIFOv0.c): new columns always enter S."""

    LCS: ClassVar[bool] = False
    KERNELS = (_s3fifo_rows, _s3fifo_layer, _s3fifo_requests)

    def __init__(self, n_layers, n_columns, capacity, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        L, N = self.L, self.N
        self.loc = np.zeros((L, N), dtype=np.int8)       # 0 absent, 1 in S, 2 in M
        self.freq = np.zeros((L, N), dtype=np.int8)
        self.sq = np.zeros((L, N), dtype=np.int64)        # ring buffers; [:, 0] head, [:, 1] tail counters
        self.s_ctr = np.zeros((L, 2), dtype=np.int64)
        self.mq = np.zeros((L, N), dtype=np.int64)
        self.m_ctr = np.zeros((L, 2), dtype=np.int64)
        GR = 2 * N + 2
        self.gq = np.zeros((L, GR), dtype=np.int64)
        self.gstamp = np.zeros((L, GR), dtype=np.int64)
        self.g_ctr = np.zeros((L, 2), dtype=np.int64)
        self.ghost_of = np.full((L, N), -1, dtype=np.int64)  # stamp of a column's live ghost entry
        self.g_valid = np.zeros(L, dtype=np.int64)
        self.g_clock = np.zeros(L, dtype=np.int64)
        self.has_evicted = np.zeros(L, dtype=np.bool_)

    def _rows(self):
        return (self.loc, self.freq, self.sq, self.s_ctr, self.mq, self.m_ctr, self.gq, self.gstamp, self.g_ctr,
                self.ghost_of)

    def _shared(self):
        return self.g_valid, self.g_clock, self.has_evicted

    def _options(self):
        return (self.LCS,)


@register_cache("s3fifo-lcs")
class S3FIFOLCS(S3FIFO):
    """libCacheSim's later S3FIFO.c: until the first eviction, a miss that finds S full goes to M."""

    LCS = True
