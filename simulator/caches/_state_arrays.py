"""The Python side of the policies that keep their own per-layer state arrays and step them with
three compiled kernels of their own (``arc``, ``s3fifo``), as opposed to the priority-ordered
policies of ``base.KeyedCache``.

A subclass names its kernels and its state; the kernels take the state in one order:

    ROWS(mask, hits, sel, hc, cap, sequential, *options, *rows, *shared, l0, l1)       cache.step
    LAYER(code, params, scores, k, masks, hits, sel, hc, C, sequential, *options,
          *rows[layer], *shared, layer)                                                cache.run_layer
    REQUESTS(ids, hits, C, *options, *rows[layer], *shared, layer)                     cache.run

``rows``: the ``[L, ...]`` state arrays (each kernel but ROWS gets one layer's row of each), the
first of them ``loc``, where 1 and 2 mark the cached columns (arc's T1 and T2, s3fifo's S and M);
``shared``: per-layer vectors indexed by the layer; ``options``: the policy's flags. LAYER also
chooses each step's mask first when ``code >= 0`` (a cache-aware policy's compiled rule, through
:func:`select_cached`). Each kernel returns the evictions.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from common.jit import njit

from ..kernels import select_row
from .base import CachePolicy


@njit
def select_cached(code, params, s, loc, k, out, res, work, fav, hist):
    """``kernels.select_row`` for one step of a layer whose state row ``loc`` marks the cached
    columns with 1 and 2; ``res`` is scratch for the residency."""
    for n in range(loc.shape[0]):
        res[n] = loc[n] == 1 or loc[n] == 2
    select_row(code, params, s, res, k, out, work, fav, hist)


class StateArrayCache(CachePolicy):
    """A policy stepped by its own kernels ``ROWS``, ``LAYER``, ``REQUESTS`` (see the module doc)."""

    KERNELS: ClassVar[tuple[Callable[..., Any], ...]] = ()    # (ROWS, LAYER, REQUESTS)

    def _rows(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def _shared(self) -> tuple[np.ndarray, ...]:
        return ()

    def _options(self) -> tuple[Any, ...]:
        return ()

    def _state(self, layer: int) -> tuple[Any, ...]:
        return (*(a[layer] for a in self._rows()), *self._shared(), layer)

    def _sync(self, l0: int, l1: int) -> None:
        loc = self._rows()[0][l0:l1]
        np.logical_or(loc == 1, loc == 2, out=self._resident[l0:l1])

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker):
        n = self.KERNELS[0](mask, hits, sel, hc, self.capacity, self.sequential, *self._options(), *self._rows(),
                            *self._shared(), l0, l1)
        self._sync(l0, l1)
        self._count_evictions(worker, n)

    def _layer_steps(self, layer, t0, masks, hits, sel, hc, selector):
        if selector is not None and selector.rule is None:
            return super()._layer_steps(layer, t0, masks, hits, sel, hc, selector)
        code, params, scores, k = -1, np.zeros(2), np.zeros((0, 0), np.float32), 0
        if selector is not None:
            (code, params), scores, k = selector.rule, selector.scores, int(selector.k)
        n = self.KERNELS[1](code, np.asarray(params, np.float64), scores, k, masks, hits, sel, hc,
                            int(self.capacity[layer]), self.sequential, *self._options(), *self._state(layer))
        self._sync(layer, layer + 1)
        self._count_evictions(0, n)

    def _requests(self, layer, t0, ids, hits):
        n = self.KERNELS[2](ids, hits, int(self.capacity[layer]), *self._options(), *self._state(layer))
        self._sync(layer, layer + 1)
        return n
