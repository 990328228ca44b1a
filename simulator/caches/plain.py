"""A cache policy in plain Python, for policies written outside the package (plugins) or tried out
before they earn a compiled kernel.

A subclass keeps its own per-layer state and gives two hooks:

    on_access(layer, cols, hits, t)   the step's columns ``cols`` (ascending ids) were accessed at
                                      step ``t``; ``hits`` says which were resident. Update state.
    evict_order(layer, cols, t)       the resident columns ``cols`` (ascending ids), reordered so
                                      that the first is evicted first

and the base class does the rest with the step semantics every policy shares (``caches.base``):
hits are counted before the step's insertions, the missed columns are inserted, victims are taken
first among resident columns outside the step's set, and a set larger than the capacity evicts the
excess among its own columns, in the same order. ``step_model="sequential"`` requests the columns
one by one in ascending order (one-column sets), ``run(ids)`` likewise. ``step``, ``run_layer``,
``run_layer_selecting`` (cache-aware masking) and ``run`` all work; they run a Python loop per
layer and step, so such a policy is about ten times slower than a compiled one (docs/how-to/plugins.md).

Layers are independent: state must be per layer (an ``[L, N]`` array, or a list of ``L`` objects),
since replay may step disjoint layer ranges in parallel threads.
"""
from __future__ import annotations

import numpy as np

from common.errors import DipsimError

from .base import CachePolicy


class PythonCache(CachePolicy):
    """Base of cache policies written in Python: give ``on_access`` and ``evict_order``."""

    def on_access(self, layer: int, cols: np.ndarray, hits: np.ndarray, t: int) -> None:
        """Update the policy's state for the columns ``cols`` of ``layer`` accessed at step ``t``."""

    def evict_order(self, layer: int, cols: np.ndarray, t: int) -> np.ndarray:
        """The resident columns ``cols`` in eviction order (first evicted first)."""
        raise NotImplementedError(f"{type(self).__name__}.evict_order(self, layer, cols, t)")

    # -- the step semantics, on top of the two hooks --
    def _victims(self, layer: int, cols: np.ndarray, n: int, t: int) -> np.ndarray:
        order = np.asarray(self.evict_order(layer, cols, t))
        if order.shape != cols.shape or not np.array_equal(np.sort(order), cols):
            raise DipsimError(f"cache policy {self.name!r}: evict_order must return the {cols.size} columns it was "
                              f"given, reordered; got {order.dtype} {list(order.shape)}")
        return order[:n]

    def _set_step(self, layer: int, ids: np.ndarray, t: int) -> tuple[np.ndarray, int]:
        """One step of ``layer`` accessing the set ``ids``: its hits and the columns evicted."""
        res = self._resident[layer]
        h = res[ids].copy()
        self.on_access(layer, ids, h.copy(), t)
        res[ids] = True
        over = int(np.count_nonzero(res)) - int(self.capacity[layer])
        evicted = 0
        if over > 0:
            outside = np.flatnonzero(res)
            outside = outside[~np.isin(outside, ids, assume_unique=True)]
            v = self._victims(layer, outside, over, t)
            res[v] = False
            evicted, over = v.size, over - v.size
        if over > 0:    # a set larger than the capacity: the excess leaves among its own columns
            v = self._victims(layer, ids, over, t)
            res[v] = False
            evicted += int(np.count_nonzero(h[np.searchsorted(ids, v)]))   # misses that never stayed: not counted
        return h, evicted

    def _layer_hits(self, layer: int, ids: np.ndarray, t: int) -> tuple[np.ndarray, int]:
        if not self.sequential:
            return self._set_step(layer, ids, t)
        out = np.empty(ids.size, dtype=bool)
        n = 0
        for i in range(ids.size):
            h, e = self._set_step(layer, ids[i:i + 1], t)
            out[i], n = h[0], n + e
        return out, n

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker) -> None:
        n = 0
        for layer in range(l0, l1):
            ids = np.flatnonzero(mask[layer])
            h, e = self._layer_hits(layer, ids, int(self.clock[layer]))
            hits[layer] = False
            hits[layer, ids] = h
            sel[layer], hc[layer], n = ids.size, int(np.count_nonzero(h)), n + e
        self._count_evictions(worker, n)

    def _requests(self, layer, t0, ids, hits) -> int:
        n = 0
        for i in range(ids.shape[0]):
            h, e = self._set_step(layer, ids[i:i + 1], t0 + i)
            hits[i], n = h[0], n + e
        return n
