"""s3fifo: S3-FIFO (Yang et al., SOSP 2023), after libCacheSim's S3FIFO.c by the same authors.

Three FIFO queues: a small queue S (10% of the capacity), a main queue M (the rest) and a ghost
queue G remembering up to 90% of the capacity of recently evicted ids (no data).

    hit(x):    freq[x] = min(freq[x] + 1, 3)
    miss(x):   in_ghost = x in G; remove x from G
               while |S| + |M| >= C: evict()
               if in_ghost, or (nothing evicted yet and |S| >= |S|max): push x to M's head
               else: push x to S's head
               freq[x] = 0
    evict():   if |M| > |M|max or |S| == 0: evict_main() else: evict_small()
    evict_small(): repeat: t = S's tail, removed from S
                     if freq[t] >= 2: push t to M's head with freq 0      (accessed again: promote)
                     else: push t to G (dropping G's oldest beyond its size); done
    evict_main():  repeat: t = M's tail
                     if freq[t] >= 1: move t to M's head, freq[t] -= 1    (2-bit clock)
                     else: remove t; done

|S|max = max(1, floor(0.1 C)) -- libCacheSim uses floor(0.1 C) and refuses objects as large as S,
which for unit-size columns would cache nothing below C = 20; |M|max = C - |S|max;
|G|max = floor(0.9 C).

Set steps (see ``caches.base``): hits are applied first, then the misses in ascending index
order. The step's columns are in use, so eviction passes over them (a used column at S's tail is
promoted to M; at M's tail it is moved to the head unchanged). When only the step's own columns
are left, the remaining misses are not cached. With single-column steps this is exactly the
algorithm above; ``reference.S3FIFORef`` is a plain per-request version checked against this one.

The per-request queue logic is inherently sequential, so it runs as one compiled (numba) loop per
step over the layers' accessed columns, not as numpy array operations.
"""
from __future__ import annotations

import numpy as np

from .base import CachePolicy, register_cache

try:
    import numba

    _njit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the module importable
    def _njit(f):
        return f


@_njit
def _s3fifo_rows(mask, hits, sel, hc, cap, loc, freq, sq, s_ctr, mq, m_ctr, gq, gstamp, g_ctr, ghost_of,
                 g_valid, g_clock, has_evicted, l0, l1):
    N = mask.shape[1]
    GR = gq.shape[1]
    n_evict = 0
    for l in range(l0, l1):
        C = cap[l]
        s_max = max(1, (C * 10) // 100)
        m_max = C - s_max
        g_max = (C * 90) // 100
        pin_s = 0
        pin_m = 0
        ns = 0
        # hits: counted before insertions; their columns are pinned for the whole step
        for n in range(N):
            hits[l, n] = False
            ns += mask[l, n]
            if mask[l, n] and loc[l, n] != 0:
                hits[l, n] = True
                if freq[l, n] < 3:
                    freq[l, n] += 1
                if loc[l, n] == 1:
                    pin_s += 1
                else:
                    pin_m += 1
        sel[l] = ns
        hc[l] = pin_s + pin_m
        for n in range(N):
            if not mask[l, n] or loc[l, n] != 0:
                continue
            in_ghost = ghost_of[l, n] >= 0
            if in_ghost:
                ghost_of[l, n] = -1
                g_valid[l] -= 1
            bypass = False
            while True:
                s_len = s_ctr[l, 0] - s_ctr[l, 1]
                m_len = m_ctr[l, 0] - m_ctr[l, 1]
                if s_len + m_len < C:
                    break
                if s_len + m_len - pin_s - pin_m <= 0:
                    bypass = True
                    break
                # ---- evict()
                if (m_len > m_max or s_len == 0) and m_len - pin_m > 0:
                    # evict_main
                    while True:
                        t = mq[l, m_ctr[l, 1] % N]
                        m_ctr[l, 1] += 1
                        if mask[l, t]:
                            mq[l, m_ctr[l, 0] % N] = t
                            m_ctr[l, 0] += 1
                        elif freq[l, t] >= 1:
                            freq[l, t] -= 1
                            mq[l, m_ctr[l, 0] % N] = t
                            m_ctr[l, 0] += 1
                        else:
                            loc[l, t] = 0
                            freq[l, t] = 0
                            n_evict += 1
                            has_evicted[l] = True
                            break
                else:
                    # evict_small
                    while s_ctr[l, 0] - s_ctr[l, 1] > 0:
                        t = sq[l, s_ctr[l, 1] % N]
                        s_ctr[l, 1] += 1
                        if mask[l, t] or freq[l, t] >= 2:
                            loc[l, t] = 2
                            if mask[l, t]:
                                pin_s -= 1
                                pin_m += 1
                            else:
                                freq[l, t] = 0
                            mq[l, m_ctr[l, 0] % N] = t
                            m_ctr[l, 0] += 1
                        else:
                            loc[l, t] = 0
                            freq[l, t] = 0
                            n_evict += 1
                            has_evicted[l] = True
                            if g_max > 0:
                                # push to the ghost queue, compacting its ring when full
                                if g_ctr[l, 0] - g_ctr[l, 1] >= GR:
                                    w = 0
                                    for i in range(g_ctr[l, 1], g_ctr[l, 0]):
                                        c = gq[l, i % GR]
                                        if ghost_of[l, c] == gstamp[l, i % GR]:
                                            gq[l, w] = c
                                            gstamp[l, w] = gstamp[l, i % GR]
                                            w += 1
                                    g_ctr[l, 1] = 0
                                    g_ctr[l, 0] = w
                                g_clock[l] += 1
                                gq[l, g_ctr[l, 0] % GR] = t
                                gstamp[l, g_ctr[l, 0] % GR] = g_clock[l]
                                g_ctr[l, 0] += 1
                                ghost_of[l, t] = g_clock[l]
                                g_valid[l] += 1
                                while g_valid[l] > g_max:
                                    c = gq[l, g_ctr[l, 1] % GR]
                                    st = gstamp[l, g_ctr[l, 1] % GR]
                                    g_ctr[l, 1] += 1
                                    if ghost_of[l, c] == st:
                                        ghost_of[l, c] = -1
                                        g_valid[l] -= 1
                            break
            if bypass:
                continue
            s_len = s_ctr[l, 0] - s_ctr[l, 1]
            if in_ghost or (not has_evicted[l] and s_len >= s_max):
                loc[l, n] = 2
                mq[l, m_ctr[l, 0] % N] = n
                m_ctr[l, 0] += 1
                pin_m += 1
            else:
                loc[l, n] = 1
                sq[l, s_ctr[l, 0] % N] = n
                s_ctr[l, 0] += 1
                pin_s += 1
            freq[l, n] = 0
    return n_evict


@register_cache("s3fifo")
class S3FIFO(CachePolicy):
    def __init__(self, n_layers, n_columns, capacity):
        super().__init__(n_layers, n_columns, capacity)
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

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker):
        n = _s3fifo_rows(mask, hits, sel, hc, self.capacity, self.loc, self.freq, self.sq, self.s_ctr, self.mq,
                         self.m_ctr, self.gq, self.gstamp, self.g_ctr, self.ghost_of, self.g_valid, self.g_clock,
                         self.has_evicted, l0, l1)
        np.not_equal(self.loc[l0:l1], 0, out=self._resident[l0:l1])
        self._count_evictions(worker, n)
