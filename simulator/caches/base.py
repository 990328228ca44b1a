"""Cache policy base class, registry, and the step semantics every policy shares.

One cache per layer (and matrix group): ``L`` layers of ``N`` weight columns, ``capacity[l]``
columns of DRAM in layer ``l``. Time advances in steps (one per token):

    hits = cache.step(mask)      # mask [L, N] bool: the columns this token uses in each layer

A step is a *set* of accesses that must all be resident together (a layer's matmul needs every
selected column at once):

1. ``hits = mask & resident``, counted before any insertion of this step.
2. The policy updates its metadata for the accessed columns and inserts the missed ones.
3. While a layer holds more than its capacity, victims are taken first among resident columns
   *not* in this step's set, in the policy's eviction order.
4. **Set larger than the capacity**: once no such column is left, the excess is evicted among this
   step's own columns, again in the policy's order (LRU: lowest column index first, as if the set
   were accessed in ascending index order). The layer then holds ``capacity`` of the step's
   columns and nothing else; the rest were streamed through without being kept.

With single-column steps (each layer accessing at most one column per step) this is exactly the
textbook per-request policy; ``simulator.caches.reference`` holds those plain definitions and the
tests check every policy against them.

Layers never interact, so a cache can also be driven one layer at a time through many steps:

    hits = cache.run_layer(layer, masks)                  # masks [T, N]: the layer's next T steps
    masks, hits = cache.run_layer_selecting(layer, sel)   # masks chosen per step from the contents

which gives exactly what T calls of ``step`` give for that layer, in one compiled loop (the
layer-wise replay and closed loop). A cache is driven either by ``step`` or by ``run_layer``.

**Requests.** ``hits = cache.run(ids, layer=0)`` takes one layer through a stream of single-column
requests (``ids``: column indices), one step each, in one compiled loop of O(1) (O(log C) for
Belady) per request: the textbook per-request policy, exactly what one-column steps give. It works
on the cache's own state, so it may follow or precede steps and ``run_layer`` of the same layer.

**Step models.** ``step_model="set"`` (default) is the set semantics above. ``"sequential"``
requests each step's columns one by one in ascending index order instead, with per-request hits:
a column resident when the token starts can then be evicted by an earlier miss of the same token
and miss itself. Both models agree wherever no step's misses evict one of the step's own columns,
e.g. when the capacity holds every column.

Policies whose choice needs the future (``belady``) set ``offline = True``; replay refuses them with
cache-aware masking and closed-loop evaluation refuses them outright.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

import numpy as np

from common.errors import DipsimError

from ..kernels import LayerSelector
from common.params import per_layer_ints
from common.registry import Registry, check_params
from . import _kernels, _requests

REGISTRY = Registry("cache policy")
register_cache = REGISTRY.register
names = REGISTRY.names
STEP_MODELS = ("set", "sequential")


def policy_params(name: str) -> list[str]:
    return list(_init_params(REGISTRY.get_class(name)))


@functools.lru_cache(maxsize=None)
def _init_params(cls: type) -> tuple[str, ...]:
    sig = inspect.signature(cls.__init__)
    return tuple(p for p in sig.parameters if p not in ("self", "n_layers", "n_columns", "capacity"))


def make(name: str, *, n_layers: int, n_columns: int, capacity: Any, **params: Any) -> "CachePolicy":
    """Build a registered cache policy; unknown names and parameters are refused with the valid ones."""
    cls = REGISTRY.get_class(name)
    check_params("cache policy", name, params, policy_params(name))
    return cls(n_layers=n_layers, n_columns=n_columns, capacity=capacity, **params)


def as_capacity(capacity: Any, L: int, N: int) -> np.ndarray:
    """Columns per layer as an int array, at least 0 and at most ``N``."""
    arr = per_layer_ints(capacity, L, "capacity", "whole columns")
    if (arr < 0).any():
        raise DipsimError(f"capacity must be >= 0 columns, got {int(arr.min())}")
    return np.minimum(arr, N)


class CachePolicy:
    """Base of all cache policies: state, checks and counters; subclasses fill ``_step``."""

    name: ClassVar[str] = "?"
    offline: ClassVar[bool] = False

    def __init__(self, n_layers: int, n_columns: int, capacity: Any, step_model: str = "set"):
        if int(n_layers) <= 0 or int(n_columns) <= 0:
            raise DipsimError(f"a cache needs n_layers > 0 and n_columns > 0, got {n_layers} and {n_columns}")
        if step_model not in STEP_MODELS:
            raise DipsimError(f"{self.name}: step_model must be one of {', '.join(STEP_MODELS)}, got {step_model!r}")
        self.step_model = step_model
        self.sequential = step_model == "sequential"
        self.L, self.N = int(n_layers), int(n_columns)
        self.capacity = as_capacity(capacity, self.L, self.N)
        self._resident = np.zeros((self.L, self.N), dtype=bool)
        self.clock = np.zeros(self.L, dtype=np.int64)   # steps taken, per layer
        self.n_req = 0
        self.n_hit = 0
        self._evictions: dict[int, int] = {}  # per worker thread, summed by n_evict

    @property
    def resident(self) -> np.ndarray:
        """Which columns each layer holds: a read-only ``[L, N]`` bool view."""
        v = self._resident.view()
        v.flags.writeable = False
        return v

    @property
    def t(self) -> int:
        """Steps taken (by every layer, when driven by ``step``)."""
        return int(self.clock.max())

    @property
    def n_evict(self) -> int:
        """Columns evicted so far (not counting misses that a too-large set never let in)."""
        return sum(self._evictions.values())

    def _count_evictions(self, worker: int, n: int) -> None:
        self._evictions[worker] = self._evictions.get(worker, 0) + int(n)

    @property
    def n_miss(self) -> int:
        return self.n_req - self.n_hit

    def occupancy(self) -> np.ndarray:
        return np.count_nonzero(self._resident, axis=1)

    def prime(self, hot_scores: np.ndarray) -> None:
        """Calibration hook (``pinned`` takes its hot set from it); most policies ignore it."""

    def step(self, mask: np.ndarray) -> np.ndarray:
        """Access the columns of ``mask`` ([L, N] bool) in every layer; return the hits (see module doc)."""
        mask = self.check_mask(mask)
        if self.clock.min() != self.clock.max():
            raise DipsimError(f"{self.name}: step() after run_layer() moved the layers apart; drive a cache "
                              f"either by step() or layer by layer")
        hits = np.empty_like(mask)
        sel = np.empty(self.L, dtype=np.int64)
        hc = np.empty(self.L, dtype=np.int64)
        self.step_rows(mask, hits, sel, hc, 0, self.L, 0)
        self.finish_step(sel, hc)
        return hits

    # -- the pieces of a step, for callers that run disjoint layer ranges in parallel threads --
    def check_mask(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.shape != (self.L, self.N) or mask.dtype != bool:
            raise DipsimError(f"{self.name}: step needs a bool mask of shape {[self.L, self.N]}, got "
                              f"{mask.dtype} {list(mask.shape)}")
        return mask

    def step_rows(self, mask: np.ndarray, hits: np.ndarray, sel: np.ndarray, hc: np.ndarray,
                  l0: int, l1: int, worker: int) -> None:
        """Step layers ``l0:l1``: fill ``hits[l0:l1]`` and the per-layer selected / hit counts.

        Calls for disjoint layer ranges may run concurrently (``worker`` numbers the caller's
        thread, for scratch space); ``finish_step`` must follow once every range is done.
        """
        self._step_rows(mask, hits, sel, hc, l0, l1, worker)

    def finish_step(self, sel: np.ndarray, hc: np.ndarray) -> None:
        self.clock += 1
        self.n_req += int(sel.sum())
        self.n_hit += int(hc.sum())

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker) -> None:
        raise NotImplementedError

    # -- one layer through many steps --
    def run_layer(self, layer: int, masks: np.ndarray) -> np.ndarray:
        """Step ``layer`` alone through its next ``T`` steps, ``masks [T, N]`` bool; return the hits
        ``[T, N]``. The same as ``T`` calls of :meth:`step` for that layer (the others idle)."""
        layer = self._check_layer(layer)
        masks = np.asarray(masks)
        if masks.ndim != 2 or masks.shape[1] != self.N or masks.dtype != bool:
            raise DipsimError(f"{self.name}: run_layer needs bool masks of shape [steps, {self.N}], got "
                              f"{masks.dtype} {list(masks.shape)}")
        masks = np.ascontiguousarray(masks)
        hits = np.empty_like(masks)
        self._run(layer, masks, hits, None)
        return hits

    def run_layer_selecting(self, layer: int, selector: LayerSelector) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`run_layer`, with each step's mask chosen by ``selector`` from that step's scores
        and the layer's contents just before it (a cache-aware policy); returns ``(masks, hits)``."""
        layer = self._check_layer(layer)
        if self.offline:
            raise DipsimError(f"cache policy {self.name!r} is an offline oracle: it cannot serve cache-aware masking")
        scores = np.ascontiguousarray(selector.scores, dtype=np.float32)
        if scores.ndim != 2 or scores.shape[1] != self.N:
            raise DipsimError(f"{self.name}: scores must be [steps, {self.N}], got {list(scores.shape)}")
        masks = np.empty(scores.shape, dtype=bool)
        hits = np.empty_like(masks)
        self._run(layer, masks, hits, selector._replace(scores=scores))
        return masks, hits

    def _check_layer(self, layer: int) -> int:
        if not 0 <= int(layer) < self.L:
            raise DipsimError(f"{self.name}: layer {layer} out of range 0..{self.L - 1}")
        return int(layer)

    def _run(self, layer, masks, hits, selector) -> None:
        T = masks.shape[0]
        sel = np.empty(T, np.int64)
        hc = np.empty(T, np.int64)
        self._layer_steps(layer, int(self.clock[layer]), masks, hits, sel, hc, selector)
        self.clock[layer] += T
        self.n_req += int(sel.sum())
        self.n_hit += int(hc.sum())

    def _layer_steps(self, layer, t0, masks, hits, sel, hc, selector) -> None:
        """Fill ``hits`` (and with a ``selector`` the ``masks``), the per-step counts and the
        eviction counter of ``layer`` over ``T`` steps from ``t0``. Subclasses replace this Python
        loop with a compiled one; it remains the way for selectors without a compiled rule."""
        full = np.zeros((self.L, self.N), dtype=bool)
        full_hits = np.zeros_like(full)
        s_cnt = np.zeros(self.L, np.int64)
        h_cnt = np.zeros(self.L, np.int64)
        saved = self.clock.copy()
        try:
            for i in range(masks.shape[0]):
                if selector is not None:
                    masks[i] = selector.select(selector.scores[i], self._resident[layer])
                full[layer] = masks[i]
                self.clock[:] = t0 + i        # the step's time, as step() would see it
                self._step_rows(full, full_hits, s_cnt, h_cnt, layer, layer + 1, 0)
                hits[i] = full_hits[layer]
                sel[i] = s_cnt[layer]
                hc[i] = h_cnt[layer]
        finally:
            self.clock[:] = saved

    # -- one request at a time --
    def run(self, ids: Any, layer: int = 0) -> np.ndarray:
        """Request the columns ``ids`` ([R] ints) of ``layer`` one by one, one step each; return
        the hit flags [R]. The same as ``R`` one-column steps of that layer, in one compiled loop."""
        layer = self._check_layer(layer)
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise DipsimError(f"{self.name}: run needs a 1-d array of column indices, got {ids.dtype} "
                              f"{list(ids.shape)}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.N):
            raise DipsimError(f"{self.name}: run: column indices must be in 0..{self.N - 1}, got "
                              f"{int(ids.min() if ids.min() < 0 else ids.max())}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        hits = np.empty(ids.shape[0], dtype=bool)
        self._count_evictions(0, self._requests(layer, int(self.clock[layer]), ids, hits))
        self.clock[layer] += ids.shape[0]
        self.n_req += ids.shape[0]
        self.n_hit += int(np.count_nonzero(hits))
        return hits

    def _requests(self, layer: int, t0: int, ids: np.ndarray, hits: np.ndarray) -> int:
        """Fill ``hits`` for the requests ``ids`` of ``layer`` from step ``t0``; return evictions."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        return {"n_req": self.n_req, "n_hit": self.n_hit, "n_miss": self.n_miss, "n_evict": self.n_evict}


class KeyedCache(CachePolicy):
    """A policy defined by an eviction order: the resident column with the smallest key
    ``(prio, index)`` goes first (LFU: ``(freq, prio, index)``). Subclasses choose how ``prio`` is
    updated (``KIND``, see ``caches._kernels``); ``_evictable`` can exclude columns from eviction
    (``pinned``).
    """

    KIND: ClassVar[int] = -1

    def __init__(self, n_layers, n_columns, capacity, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        self.prio = np.full((self.L, self.N), -1, dtype=np.int64)
        self.freq = np.zeros((self.L, self.N if self.KIND == _kernels.LFU else 0), dtype=np.int64)
        self._evictable = np.ones((self.L, self.N), dtype=bool)
        self._scratch: dict[int, np.ndarray] = {}

    def _next_uses(self, mask, l0, l1) -> np.ndarray:
        return _EMPTY

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker):
        if self.sequential:
            return self._sequential_rows(mask, hits, sel, hc, l0, l1, worker)
        cand = self._scratch.get(worker)
        if cand is None:  # per worker thread: the candidate flags of one row
            cand = self._scratch[worker] = np.empty(self.N, np.bool_)
        n = _kernels.keyed_rows(self.KIND, mask, self._resident, self.prio, self.freq, self._evictable, self.capacity,
                                self.t, self._t1(), self._next_uses(mask, l0, l1), hits, sel, hc, cand, l0, l1)
        self._count_evictions(worker, n)

    def _t1(self) -> int:
        return 0

    def _state(self, layer):
        return self._resident[layer], self.prio[layer], self.freq[layer], self._evictable[layer], \
            int(self.capacity[layer])

    def _sequential_rows(self, mask, hits, sel, hc, l0, l1, worker):
        n = 0
        for layer in range(l0, l1):
            ids = np.flatnonzero(mask[layer])
            h = np.empty(ids.shape[0], dtype=bool)
            n += _requests.keyed_requests(self.KIND, ids, np.zeros(ids.shape[0], np.int64), self.t, 0, _EMPTY,
                                          *self._state(layer), h)
            hits[layer] = False
            hits[layer, ids] = h
            sel[layer] = ids.shape[0]
            hc[layer] = int(np.count_nonzero(h))
        self._count_evictions(worker, n)

    def _requests(self, layer, t0, ids, hits):
        t1, nu = self._request_future(layer, t0, ids, None)
        return _requests.keyed_requests(self.KIND, ids, _EMPTY, t0, t1, nu, *self._state(layer), hits)

    def _request_future(self, layer, t0, ids, masks) -> tuple[int, np.ndarray]:
        """``(t1, next-use position of every request)`` for the per-request kernel (Belady only;
        ``masks``: the steps the requests come from, None for ``run``)."""
        return 0, _EMPTY

    def _layer_steps(self, layer, t0, masks, hits, sel, hc, selector) -> None:
        args = self._state(layer)
        if self.sequential and selector is None:
            rows, ids = np.nonzero(masks)
            h = np.empty(ids.shape[0], dtype=bool)
            t1, nu = self._request_future(layer, t0, ids, masks)
            n = _requests.keyed_requests(self.KIND, ids, rows, t0, t1, nu, *args, h)
            hits[:] = False
            hits[rows, ids] = h
            sel[:] = np.count_nonzero(masks, axis=1)
            hc[:] = np.count_nonzero(hits, axis=1)
        elif selector is None:
            t1, nxt = self._layer_future(layer, t0, masks)
            n = _kernels.keyed_layer(self.KIND, masks, *args, t0, t1, nxt, hits, sel, hc)
        elif selector.rule is None:
            return super()._layer_steps(layer, t0, masks, hits, sel, hc, selector)
        elif self.sequential:
            code, params = selector.rule
            n = _requests.keyed_requests_select(self.KIND, code, np.asarray(params, np.float64), selector.scores,
                                                int(selector.k), *args, t0, masks, hits, sel, hc)
        else:
            code, params = selector.rule
            n = _kernels.keyed_layer_select(self.KIND, code, np.asarray(params, np.float64), selector.scores,
                                            int(selector.k), *args, t0, masks, hits, sel, hc)
        self._count_evictions(0, n)

    def _layer_future(self, layer, t0, masks) -> tuple[int, np.ndarray]:
        """``(t1, next uses)`` for the kernel (only Belady looks at them)."""
        return 0, _EMPTY


_EMPTY = np.zeros(0, dtype=np.int64)
