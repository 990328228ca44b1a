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
def insert_after(prv, nxt, x, a):
    """Put ``x`` into ``a``'s list right after ``a`` (after the sentinel: first; after the last entry:
    last)."""
    b = nxt[a]
    nxt[a] = x
    prv[x] = a
    nxt[x] = b
    prv[b] = x
