"""Compiled per-request path of the priority-ordered policies (lru, fifo, lfu, belady, pinned).

The set-step kernels (``caches._kernels``) find victims by scanning a layer's priorities, which
costs O(N) per step: right for a token's thousands of columns, wasteful for one request. Here each
request costs O(1) (LRU, FIFO, LFU) or O(log C) (Belady), on an index structure over the layer's
evictable resident columns that orders them by the same key ``(prio, index)`` (LFU:
``(freq, prio, index)``):

    LRU, FIFO   a doubly linked list, least key first (an access appends; FIFO moves nothing on a hit)
    LFU         one such list per frequency, the frequencies themselves a linked list of nodes
                (``caches._lfu``): within a frequency, least recent first
    BELADY      an indexed binary min-heap on the key

The structure is built at the start of every call from the cache's own state (``res``, ``prio``,
``freq``, ``evictable``: a sort of the resident keys, which for the heap is already a valid heap), and every
request updates that state as the set-step kernel would. So requests and set steps share one
state: ``cache.run(ids)`` continues from whatever steps left, and steps continue after it.

Time: request ``i`` happens at step ``t0 + i`` (``cache.run``) or at its token's step (the
``sequential`` step model, where a token's columns are requests in ascending index order: equal
steps tie on the index, which is the order of access, so the keys order exactly as per-request
times would). Belady's priorities come from the next-use positions of the stream itself.
"""
from __future__ import annotations

import numpy as np

from common.jit import njit, njit_inline as _inline

from ..kernels import scratch, select_row
from ._kernels import FIFO, LFU, LRU
from ._lfu import lfu_build, lfu_close, lfu_open, lfu_push, lfu_store
from ._lists import insert_before, unlink, unlink_first


@njit
def _sorted_candidates(res, prio, freq, evictable):
    """Evictable resident columns in ascending key order -- ``(prio, index)``, or ``(freq, prio,
    index)`` when ``freq`` has a column per column (LFU) -- and the layer's occupancy. Stable sorts
    on each part, least significant first: no part is folded into another, so none bounds another."""
    N = res.shape[0]
    occ = 0
    m = 0
    for n in range(N):
        occ += res[n]
        m += res[n] & evictable[n]
    cols = np.empty(m, np.int64)
    j = 0
    for n in range(N):
        if res[n] and evictable[n]:
            cols[j] = n
            j += 1
    cols = cols[np.argsort(prio[cols], kind="mergesort")]
    if freq.shape[0] == N:
        cols = cols[np.argsort(freq[cols], kind="mergesort")]
    return cols, occ


# ------------------------------------------------------------------------ LRU / FIFO: one list
@njit
def _list_build(order, N):
    """Doubly linked list over ``order``; slot ``N`` is the sentinel (next = head, prev = tail)."""
    prv = np.empty(N + 1, np.int64)
    nxt = np.empty(N + 1, np.int64)
    last = N
    for j in range(order.shape[0]):
        c = order[j]
        nxt[last] = c
        prv[c] = last
        last = c
    nxt[last] = N
    prv[N] = last
    return prv, nxt


@njit
def keyed_segment(kind, ids, rows, t0, res, prio, freq, evictable, cap, occ, prv, nxt, st, hits):
    """Requests ``ids`` of LRU or FIFO (``prv, nxt``: their list; ``st`` None) or of LFU (``st``:
    its frequency nodes, ``caches._lfu``), see :func:`keyed_requests`; returns ``(occupancy,
    evictions)``.

    One loop for the three policies, compiled twice: numba drops the branches on ``st is None``
    when ``st`` is None, so LRU's and FIFO's version is their loop alone (one loop that tested at
    run time which structure it serves was twice as slow for LRU). Its list helpers cost nothing
    only as written here; see ``caches._lists``."""
    if st is not None:
        iprv, inxt, node, nfreq, nprv, nnxt, free = st
    N = res.shape[0]
    per_row = rows.shape[0] > 0
    n_evict = 0
    for i in range(ids.shape[0]):
        x = ids[i]
        t = t0 + (rows[i] if per_row else i)
        at, f = N, 1                    # LFU: x goes into the node of frequency f after node ``at``
        if res[x]:
            hits[i] = True
            if st is None:
                if kind == LRU and evictable[x]:
                    prio[x] = t
                    unlink(prv, nxt, x)
                    insert_before(prv, nxt, x, N)
                continue
            j = node[x]
            if j < 0:                       # not evictable: count and step kept here
                freq[x] += 1
                prio[x] = t
                continue
            f = nfreq[j] + 1                # (the nodes hold the counts until lfu_store)
            unlink(iprv, inxt, x)
            at = j
            if inxt[N + 1 + j] == N + 1 + j:    # node j left empty: closed
                at = nprv[j]                    # rare[lfu]: a hit empties its count's list
                lfu_close(nprv, nnxt, free, j)
        else:
            hits[i] = False
            if st is None:
                prio[x] = t
            if occ >= cap:
                if st is None:              # the victim: the least key ...
                    v = nxt[N]
                else:                       # ... or the least frequent, least recent
                    j = nnxt[N]
                    v = N if j == N else inxt[N + 1 + j]
                if v == N:                  # nothing evictable: x passes through uncached
                    continue                # rare[none]: a request streams through
                if st is None:
                    unlink_first(prv, nxt, N)
                else:
                    unlink_first(iprv, inxt, N + 1 + j)
                    node[v] = -1
                    if inxt[N + 1 + j] == N + 1 + j:
                        lfu_close(nprv, nnxt, free, j)  # rare[lfu]: an eviction empties its count's list
                res[v] = False
                occ -= 1
                n_evict += 1
            res[x] = True
            if st is None:                  # (not last on this path: see caches._lists)
                insert_before(prv, nxt, x, N)   # at the end: the greatest key
            occ += 1
            if st is None:
                continue
        if st is not None:
            j = nnxt[at]
            if j == N or nfreq[j] != f:
                j = free[free[0]]
                lfu_open(iprv, inxt, nfreq, nprv, nnxt, free, j, at, f)
            lfu_push(iprv, inxt, node, x, j)
    return occ, n_evict


# ------------------------------------------------------------------------ Belady: indexed heap
@_inline
def _key(prio, c, N):
    return prio[c] * N + c


@_inline
def _sift(heap, pos, prio, i, m, N):
    """Restore the heap property around slot ``i`` (up, then down) for a heap of ``m`` entries."""
    c = heap[i]
    k = _key(prio, c, N)
    while i > 0:
        p = (i - 1) // 2
        if _key(prio, heap[p], N) <= k:
            break
        heap[i] = heap[p]
        pos[heap[i]] = i
        i = p
    while True:
        a = 2 * i + 1
        if a >= m:
            break
        b = a + 1
        if b < m and _key(prio, heap[b], N) < _key(prio, heap[a], N):
            a = b
        if _key(prio, heap[a], N) >= k:
            break
        heap[i] = heap[a]
        pos[heap[i]] = i
        i = a
    heap[i] = c
    pos[c] = i


@njit
def _belady_segment(ids, nu, t1, res, prio, cap, occ, heap, pos, m, hits):
    """Requests ``ids`` of Belady, ``nu`` their next uses; returns ``(occupancy, evictions)``."""
    N = res.shape[0]
    n_evict = 0
    for i in range(ids.shape[0]):
        x = ids[i]
        prio[x] = t1 - nu[i]
        if res[x]:
            hits[i] = True
            if pos[x] >= 0:
                _sift(heap, pos, prio, pos[x], m, N)
            continue
        hits[i] = False
        if occ >= cap:
            if m == 0:
                continue
            v = heap[0]
            pos[v] = -1
            res[v] = False
            occ -= 1
            n_evict += 1
            m -= 1
            if m > 0:
                heap[0] = heap[m]
                _sift(heap, pos, prio, 0, m, N)
        res[x] = True
        heap[m] = x
        _sift(heap, pos, prio, m, m + 1, N)
        m += 1
        occ += 1
    return occ, n_evict


# ------------------------------------------------------------------------ drivers
@njit
def keyed_requests(kind, ids, rows, t0, t1, nu, res, prio, freq, evictable, cap, hits):
    """Requests ``ids`` to one layer (rows of its state), request ``i`` at step ``t0 + rows[i]``
    (``t0 + i`` when ``rows`` is empty); ``nu`` (Belady): each request's next-use position, ``t1``
    meaning never. Fills ``hits``; returns evictions of resident columns."""
    N = res.shape[0]
    order, occ = _sorted_candidates(res, prio, freq, evictable)
    if kind == LRU or kind == FIFO:
        return keyed_segment(kind, ids, rows, t0, res, prio, freq, evictable, cap, occ, *_list_build(order, N), None,
                             hits)[1]
    if kind == LFU:
        st = lfu_build(order, freq, N)
        n = keyed_segment(kind, ids, rows, t0, res, prio, freq, evictable, cap, occ, *_list_build(order[:0], 0), st,
                          hits)[1]
        lfu_store(freq, prio, st, t0 + (rows[-1] if rows.shape[0] > 0 else ids.shape[0] - 1))    # the last step
        return n
    heap = np.empty(N, np.int64)
    pos = np.full(N, -1, np.int64)
    m = order.shape[0]
    for j in range(m):
        heap[j] = order[j]
        pos[order[j]] = j
    return _belady_segment(ids, nu, t1, res, prio, cap, occ, heap, pos, m, hits)[1]


@njit
def keyed_requests_select(kind, code, params, scores, k, res, prio, freq, evictable, cap, t0, masks, hits, sel_count,
                          hit_count):
    """The ``sequential`` step model with cache-aware selection: per token, the mask is chosen from
    the scores and the contents (``kernels.select_row``), then its columns are requested in
    ascending index order (LRU, FIFO, LFU)."""
    T, N = scores.shape
    work, fav, hist = scratch(N)
    ids = np.empty(N, np.int64)
    h = np.empty(N, np.bool_)
    same_step = np.zeros(N, np.int64)    # every request of a token at the token's step
    order, occ = _sorted_candidates(res, prio, freq, evictable)
    st = lfu_build(order if kind == LFU else order[:0], freq, N)
    prv, nxt = _list_build(order[:0], 0) if kind == LFU else _list_build(order, N)
    n_evict = 0
    for i in range(T):
        select_row(code, params, scores[i], res, k, masks[i], work, fav, hist)
        m = row_ids(masks[i], ids)
        if kind == LFU:
            occ, e = keyed_segment(kind, ids[:m], same_step[:m], t0 + i, res, prio, freq, evictable, cap, occ, prv, nxt,
                                   st, h)
        else:
            occ, e = keyed_segment(kind, ids[:m], same_step[:m], t0 + i, res, prio, freq, evictable, cap, occ, prv, nxt,
                                   None, h)
        n_evict += e
        sel_count[i] = m
        hit_count[i] = scatter_hits(hits[i], ids, h, m)
    if kind == LFU:
        lfu_store(freq, prio, st, t0 + T - 1)
    return n_evict


@njit
def row_ids(mask, ids):
    """The columns of one step's ``mask`` in ascending order, into ``ids``; returns how many."""
    m = 0
    for x in range(mask.shape[0]):
        ids[m] = x
        m += mask[x]
    return m


@njit
def scatter_hits(hits, ids, h, m):
    """A step's per-request hits ``h[:m]`` of the columns ``ids[:m]`` as its row ``hits``; returns the count."""
    hits[:] = False
    nh = 0
    for j in range(m):
        hits[ids[j]] = h[j]
        nh += h[j]
    return nh


@njit
def next_use_positions(ids, N, never):
    """For each request of ``ids`` (columns ``0..N-1``), the position of the next request of the
    same column (``never`` if none): Belady's view of the future, in one backward pass."""
    R = ids.shape[0]
    out = np.empty(R, np.int64)
    last = np.full(N, never, np.int64)
    for i in range(R - 1, -1, -1):
        c = ids[i]
        out[i] = last[c]
        last[c] = i
    return out

