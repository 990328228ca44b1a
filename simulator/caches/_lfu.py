"""LFU's per-request index (see ``caches._requests``): the O(1) LFU of Shah, Mitra and Matani
(2010). The evictable resident columns of a layer sit in one list per frequency, least recent
first; the frequencies in use form an ascending linked list of nodes, so the victim -- least
frequent, then least recent -- is the head of the first node, and a hit moves a column to the
next node (made when the next frequency is not yet in use). Nodes come from a free stack of N.
"""
from __future__ import annotations

import numpy as np

from common.jit import njit
from ._kernels import LFU_STEPS


@njit
def lfu_build(order, prio, N):
    """Item lists ``iprv/inxt`` (slot N unused) per frequency node; nodes ``0..N-1`` from a free
    stack, node ``N`` the sentinel of the ascending node list. ``node[c]``: the node of column c."""
    iprv = np.empty(N + 1, np.int64)
    inxt = np.empty(N + 1, np.int64)
    node = np.full(N, -1, np.int64)
    nfreq = np.zeros(N + 1, np.int64)
    nprv = np.empty(N + 1, np.int64)
    nnxt = np.empty(N + 1, np.int64)
    head = np.empty(N + 1, np.int64)
    tail = np.empty(N + 1, np.int64)
    free = np.empty(N + 1, np.int64)   # free[0]: count; free[1:]: node ids
    free[0] = N
    for j in range(N):
        free[1 + j] = N - 1 - j
    nprv[N] = N
    nnxt[N] = N
    nfreq[N] = -1
    for j in range(order.shape[0]):
        c = order[j]
        f = prio[c] // LFU_STEPS
        last = nprv[N]
        if last == N or nfreq[last] != f:
            last = _lfu_new_node(nfreq, nprv, nnxt, head, tail, free, last, f)
        _lfu_push(iprv, inxt, head, tail, node, last, c)
    return iprv, inxt, node, nfreq, nprv, nnxt, head, tail, free


@njit
def _lfu_new_node(nfreq, nprv, nnxt, head, tail, free, after, f):
    j = free[free[0]]
    free[0] -= 1
    nfreq[j] = f
    head[j] = -1
    tail[j] = -1
    q = nnxt[after]
    nnxt[after] = j
    nprv[j] = after
    nnxt[j] = q
    nprv[q] = j
    return j


@njit
def _lfu_push(iprv, inxt, head, tail, node, j, c):
    node[c] = j
    inxt[c] = -1
    iprv[c] = tail[j]
    if tail[j] >= 0:
        inxt[tail[j]] = c
    else:
        head[j] = c
    tail[j] = c


@njit
def lfu_segment(ids, rows, t0, res, prio, cap, occ, st, hits):
    """Requests ``ids`` of LFU; returns ``(occupancy, evictions)``. The list operations are written
    out: as calls (even inlined ones) they cost three times as much per request."""
    iprv, inxt, node, nfreq, nprv, nnxt, head, tail, free = st
    N = res.shape[0]
    per_row = rows.shape[0] > 0
    n_evict = 0
    for i in range(ids.shape[0]):
        x = ids[i]
        t = t0 + (rows[i] if per_row else i)
        if res[x]:
            hits[i] = True
            f = prio[x] // LFU_STEPS + 1
            prio[x] = f * LFU_STEPS + t
            j = node[x]
            if j < 0:                       # not evictable
                continue
            # out of node j (freed when left empty); then into node f, after j (or j's predecessor)
            p = iprv[x]
            q = inxt[x]
            if p >= 0:
                inxt[p] = q
            else:
                head[j] = q
            if q >= 0:
                iprv[q] = p
            else:
                tail[j] = p
            at = j
            if head[j] < 0:
                a = nprv[j]
                b = nnxt[j]
                nnxt[a] = b
                nprv[b] = a
                free[0] += 1
                free[free[0]] = j
                at = a
            nj = nnxt[at]
            if nj == N or nfreq[nj] != f:
                nj = free[free[0]]
                free[0] -= 1
                nfreq[nj] = f
                head[nj] = -1
                tail[nj] = -1
                b = nnxt[at]
                nnxt[at] = nj
                nprv[nj] = at
                nnxt[nj] = b
                nprv[b] = nj
        else:
            hits[i] = False
            prio[x] = LFU_STEPS + t
            if occ >= cap:
                j = nnxt[N]
                if j == N:                  # nothing evictable: x passes through uncached
                    continue
                v = head[j]                 # least frequent, least recent
                q = inxt[v]
                head[j] = q
                if q >= 0:
                    iprv[q] = -1
                else:
                    tail[j] = -1
                    a = nprv[j]
                    b = nnxt[j]
                    nnxt[a] = b
                    nprv[b] = a
                    free[0] += 1
                    free[free[0]] = j
                node[v] = -1
                res[v] = False
                occ -= 1
                n_evict += 1
            res[x] = True
            occ += 1
            nj = nnxt[N]
            if nj == N or nfreq[nj] != 1:
                j = free[free[0]]
                free[0] -= 1
                nfreq[j] = 1
                head[j] = -1
                tail[j] = -1
                nnxt[N] = j
                nprv[j] = N
                nnxt[j] = nj
                nprv[nj] = j
                nj = j
        # x at the tail (most recent) of node nj
        node[x] = nj
        inxt[x] = -1
        last = tail[nj]
        iprv[x] = last
        if last >= 0:
            inxt[last] = x
        else:
            head[nj] = x
        tail[nj] = x
    return occ, n_evict
