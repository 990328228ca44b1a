"""LFU's per-request index (see ``caches._requests``): the O(1) LFU of Shah, Mitra and Matani
(2010). The evictable resident columns of a layer sit in one list per frequency, least recent
first; the frequencies in use form an ascending linked list of nodes, so the victim -- least
frequent, then least recent -- is the first column of the first node, and a hit moves a column
to the next node (made when the next frequency is not yet in use). Nodes come from a free stack.

Every list is a ring of ``caches._lists`` closed by a sentinel: the node list's is node ``N``,
node ``j``'s column list's is slot ``N + 1 + j`` of ``iprv/inxt``; so every list operation is
straight-line code (the condition for inlined helpers to cost nothing, see ``caches._lists``).
The state is the tuple :func:`lfu_build` returns; the request loop is
``_requests.keyed_segment``, with the helpers here.
"""
from __future__ import annotations

import numpy as np

from common.jit import njit, njit_inline as _inline
from ._lists import insert_after, insert_before, unlink


@njit
def lfu_build(order, freq, N):
    """``(iprv, inxt, node, nfreq, nprv, nnxt, free)`` over the columns ``order`` (ascending
    keys ``(freq, prio, index)``): column lists ``iprv/inxt``, ``node[c]`` the node of column ``c`` (-1: none), node
    frequencies ``nfreq`` and the node list ``nprv/nnxt``; ``free[0]`` counts the free nodes
    ``free[1:]``."""
    iprv = np.empty(2 * N + 1, np.int64)
    inxt = np.empty(2 * N + 1, np.int64)
    node = np.full(N, -1, np.int64)
    nfreq = np.zeros(N + 1, np.int64)
    nprv = np.empty(N + 1, np.int64)
    nnxt = np.empty(N + 1, np.int64)
    free = np.empty(N + 1, np.int64)
    free[0] = N
    for j in range(N):
        free[1 + j] = N - 1 - j
    nprv[N] = N
    nnxt[N] = N
    nfreq[N] = -1
    for j in range(order.shape[0]):
        c = order[j]
        f = freq[c]
        last = nprv[N]
        if last == N or nfreq[last] != f:
            last = free[free[0]]
            lfu_open(iprv, inxt, nfreq, nprv, nnxt, free, last, nprv[N], f)
        lfu_push(iprv, inxt, node, c, last)
    return iprv, inxt, node, nfreq, nprv, nnxt, free


@njit
def lfu_store(freq, prio, st, t_last):
    """Write the index ``st`` back into the layer's state: every listed column's count into
    ``freq`` and its recency into ``prio``, as stamps that fall by one from ``t_last`` (the last
    step taken) down each list, most recent first. The request loop keeps both in the lists alone
    (one store fewer per request); stamps order a count's columns as their steps of last use do,
    and columns of different counts are never compared by stamp."""
    iprv, inxt, node, nfreq, nprv, nnxt, free = st
    N = freq.shape[0]
    j = nnxt[N]
    while j != N:
        s = N + 1 + j
        stamp = t_last
        c = iprv[s]
        while c != s:
            freq[c] = nfreq[j]
            prio[c] = stamp
            stamp -= 1
            c = iprv[c]
        j = nnxt[j]


@_inline
def lfu_open(iprv, inxt, nfreq, nprv, nnxt, free, j, at, f):
    """Take node ``j`` (the top of the free stack) for frequency ``f``, empty, after node ``at``."""
    free[0] -= 1
    nfreq[j] = f
    s = nnxt.shape[0] + j           # N + 1 + j: the sentinel of j's column list
    iprv[s] = s
    inxt[s] = s
    insert_after(nprv, nnxt, j, at)


@_inline
def lfu_close(nprv, nnxt, free, j):
    """Node ``j`` (left empty) out of the node list, back on the free stack."""
    unlink(nprv, nnxt, j)
    free[0] += 1
    free[free[0]] = j


@_inline
def lfu_push(iprv, inxt, node, c, j):
    """Column ``c`` at the end (most recent) of node ``j``'s list."""
    node[c] = j
    insert_before(iprv, inxt, c, node.shape[0] + 1 + j)
