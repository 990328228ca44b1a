"""Doubly linked lists in two index arrays, for the compiled per-request loops: ``prv[x]`` and
``nxt[x]`` are the neighbours of ``x``; each list is a ring closed by a sentinel slot (``nxt`` of
the sentinel is the first entry, ``prv`` the last). Used by the per-request index of lru/fifo and
lfu (``caches._requests``, ``caches._lfu``) and by arc's four lists.

Helpers like these cost nothing inlined into a loop only as long as numba can drop the reference
counting it puts around an inlined call's array arguments, which it can where that counting stays
in one block. So a helper has no branches, and no two branches of a loop both end in a helper call
right before they join: LLVM moves their identical trailing decrements into the join, where they
can no longer be paired, and every pass then pays atomic reference counts (seen here: arc's loop
15% slower, lfu's 9x). Kernels built from these helpers were checked for ``NRT_incref`` inside
their loops (``kernel.inspect_llvm(signature)``, compiled without the on-disk cache).
"""
from __future__ import annotations

from common.jit import njit_inline


@njit_inline
def unlink(prv, nxt, x):
    """Take ``x`` out of its list."""
    a = prv[x]
    b = nxt[x]
    nxt[a] = b
    prv[b] = a


@njit_inline
def unlink_first(prv, nxt, s):
    """Take the first entry out of sentinel ``s``'s list (``unlink(prv, nxt, nxt[s])`` without
    reading the entry's ``prv`` slot, which an eviction would otherwise fetch for nothing)."""
    b = nxt[nxt[s]]
    nxt[s] = b
    prv[b] = s


@njit_inline
def insert_after(prv, nxt, x, a):
    """Put ``x`` into ``a``'s list right after ``a`` (after the sentinel: first)."""
    b = nxt[a]
    nxt[a] = x
    prv[x] = a
    nxt[x] = b
    prv[b] = x


@njit_inline
def insert_before(prv, nxt, x, b):
    """Put ``x`` into ``b``'s list right before ``b`` (before the sentinel: last). The same as
    ``insert_after(prv, nxt, x, prv[b])``, without reading the neighbour's slot: appends read only
    the sentinel's, which stays in cache."""
    a = prv[b]
    nxt[a] = x
    prv[x] = a
    nxt[x] = b
    prv[b] = x
