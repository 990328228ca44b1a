"""window: LLM in a Flash's sliding window (Alizadeh et al., arXiv 2312.11514) -- the columns (neurons)
used in the last ``tokens`` steps stay in DRAM, and only the ones new to the window are loaded.

    after step t: resident = the columns used at steps t - tokens + 1 .. t
                  (more than the capacity: the least recently used go first, as in lru)
    access(x):    hit iff resident (used within the last ``tokens`` steps)

It is LRU whose entries also expire ``tokens`` steps after their last use: with a capacity the
window's union never reaches it is the plain window of the paper (the DRAM it holds varies with the
text, at most the capacity); with a large ``tokens`` it is LRU. So at one DRAM budget it never hits
more than LRU: a window keeps memory small rather than hits high. The paper pairs it with a neuron
selection (its own predictor of active neurons), bundled reads and a window of a few tokens; dipsim
runs it under any masking policy. Steps are sets, as in ``caches.base``; in the ``sequential`` step
model a token's columns are requests at the token's step, and the window counts tokens.

The window is LRU's compiled step followed by one expiry pass per step (what it leaves equals
expiring first, since expired columns are the least recent); requests (``run``) are one-column steps,
O(N) each.
"""
from __future__ import annotations

import numpy as np

from common.errors import DipsimError
from common.jit import njit

from ..kernels import scratch, select_row
from ._kernels import LRU as _LRU_KIND
from ._kernels import keyed_row
from ._requests import keyed_requests, row_ids, scatter_hits
from .base import CachePolicy, register_cache
from .lru import LRU

_EMPTY = np.zeros(0, dtype=np.int64)


@njit
def _expire(res, prio, horizon):
    """Drop the resident columns last used at or before step ``horizon``; returns how many."""
    n = 0
    for c in range(res.shape[0]):
        old = res[c] & (prio[c] <= horizon)
        n += old
        res[c] = res[c] & (old ^ True)
    return n


@njit
def _window_steps(masks, res, prio, freq, evictable, cap, t0, tokens, sequential, hits, sel, hc, code, params, scores,
                  k, selecting):
    """Steps ``t0, t0 + 1, ...`` of one layer: each step's mask (given, or chosen by ``select_row``
    from the scores and the contents), LRU's step (set or sequential), then the expiry. Returns the
    evictions of resident columns."""
    T, N = masks.shape
    cand = np.empty(N, np.bool_)
    work, fav, hist = scratch(N)
    ids = np.empty(N, np.int64)
    rows = np.zeros(N, np.int64)
    h = np.empty(N, np.bool_)
    n_evict = 0
    for i in range(T):
        t = t0 + i
        if selecting:
            select_row(code, params, scores[i], res, k, masks[i], work, fav, hist)
        if sequential:
            m = row_ids(masks[i], ids)
            n_evict += keyed_requests(_LRU_KIND, ids[:m], rows[:m], t, 0, _EMPTY, res, prio, freq, evictable, cap,
                                      h[:m])
            sel[i] = m
            hc[i] = scatter_hits(hits[i], ids, h, m)
        else:
            e, ns, nh, _ = keyed_row(_LRU_KIND, masks[i], res, prio, freq, evictable, cap, t, 0, _EMPTY, 0, hits[i],
                                     cand)
            n_evict += e
            sel[i] = ns
            hc[i] = nh
        n_evict += _expire(res, prio, t - tokens)
    return n_evict


@register_cache("window")
class Window(LRU):
    def __init__(self, n_layers, n_columns, capacity, tokens: int = 5, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or not 1 <= tokens <= 1 << 30:
            raise DipsimError(f"window tokens must be a whole number of steps >= 1, got {tokens!r}")
        self.tokens = int(tokens)

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker):
        super()._step_rows(mask, hits, sel, hc, l0, l1, worker)
        n = sum(_expire(self._resident[layer], self.prio[layer], self.t - self.tokens) for layer in range(l0, l1))
        self._count_evictions(worker, n)

    def _layer_steps(self, layer, t0, masks, hits, sel, hc, selector) -> None:
        if selector is not None and selector.rule is None:   # a Python rule: the plain loop over _step_rows
            return CachePolicy._layer_steps(self, layer, t0, masks, hits, sel, hc, selector)
        code, params = selector.rule if selector is not None else (0, np.zeros(0))
        scores = selector.scores if selector is not None else np.zeros((1, self.N), np.float32)
        k = int(selector.k) if selector is not None else 0
        n = _window_steps(masks, *self._state(layer), t0, self.tokens, self.sequential, hits, sel, hc, code,
                          np.asarray(params, np.float64), scores, k, selector is not None)
        self._count_evictions(0, n)

    def _requests(self, layer, t0, ids, hits):
        n = 0
        for a in range(0, ids.shape[0], 4096):      # one-column steps, a block at a time
            b = min(a + 4096, ids.shape[0])
            one = np.zeros((b - a, self.N), dtype=bool)
            one[np.arange(b - a), ids[a:b]] = True
            full = np.empty_like(one)
            sel, hc = np.empty(b - a, np.int64), np.empty(b - a, np.int64)
            n += _window_steps(one, *self._state(layer), t0 + a, self.tokens, False, full, sel, hc, 0, np.zeros(0),
                               np.zeros((1, self.N), np.float32), 0, False)
            hits[a:b] = full[np.arange(b - a), ids[a:b]]
        return n
