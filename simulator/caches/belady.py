"""belady: Belady's MIN / OPT, the offline optimum -- evict the column whose next use is farthest.

    access(x): if x cached: hit
               else: miss; if full: evict the cached column whose next access is farthest in
                     the future (never again = farthest; ties: lowest index); insert x

It needs the whole access sequence up front, so it serves only cache-oblivious masking, whose masks
do not depend on the cache: driven by ``step``, it needs ``future`` (masks ``[T, L, N]``) and each
step must be exactly the next mask of it; driven layer by layer, ``run_layer`` must receive the
layer's whole sequence at once (which is then its future). Anything else is refused rather than
turned into a meaningless number; ``run(ids)`` takes a layer's whole request stream the same way.
Key = (T + 1 - next_use) * N + index (per request: positions in the stream instead of steps).
"""
from __future__ import annotations

import numpy as np

from common.errors import DipsimError

from . import _kernels, _requests
from .base import KeyedCache, register_cache


@register_cache("belady")
class Belady(KeyedCache):
    KIND = _kernels.BELADY
    offline = True

    def __init__(self, n_layers, n_columns, capacity, future=None, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        self.future = None
        if future is None:
            return
        future = np.asarray(future)
        if future.ndim != 3 or future.shape[1:] != (self.L, self.N) or future.dtype != bool:
            raise DipsimError(f"belady: future must be bool masks of shape [T, {self.L}, {self.N}], got "
                              f"{future.dtype} {list(future.shape)}")
        self.future = future
        self.T = future.shape[0]
        # next use after each step of every column it touches (row-major), in one backward pass
        self._next_after: list[np.ndarray] = [_EMPTY] * self.T
        self._row_start: list[np.ndarray] = [_EMPTY] * self.T
        nxt = np.full((self.L, self.N), self.T + 1, dtype=np.int64)
        for t in range(self.T - 1, -1, -1):
            m = future[t]
            self._next_after[t] = nxt[m]
            self._row_start[t] = np.concatenate([[0], np.cumsum(np.count_nonzero(m, axis=1))])
            nxt[m] = t

    def check_mask(self, mask):
        mask = super().check_mask(mask)
        if self.sequential:
            raise DipsimError("belady: with step_model 'sequential' it runs a layer's whole sequence at once "
                              "(run_layer or run), not step by step")
        if self.future is None:
            raise DipsimError("cache policy 'belady' (offline OPT) needs the whole access sequence: give "
                              "future=[T, L, N] masks to step() it, or run_layer() each layer's whole sequence; "
                              "it cannot serve cache-aware masking or the closed loop")
        if self.t >= self.T:
            raise DipsimError(f"belady: step {self.t} beyond the {self.T} steps of its future")
        if not np.array_equal(mask, self.future[self.t]):
            raise DipsimError(f"belady: step {self.t} differs from the future it was given; OPT only replays "
                              f"a fixed access sequence (cache-oblivious masking, open loop)")
        return mask

    def _next_uses(self, mask, l0, l1):
        start = self._row_start[self.t]
        return self._next_after[self.t][start[l0]:start[l1]]

    def _t1(self):
        return self.T + 1

    def _layer_future(self, layer, t0, masks):
        T = masks.shape[0]
        if t0 != 0:
            raise DipsimError("belady: run_layer takes a layer's whole access sequence in one call (its future)")
        if self.future is not None and not (T == self.T and np.array_equal(masks, self.future[:, layer])):
            raise DipsimError(f"belady: the masks of layer {layer} differ from the future it was given")
        return T + 1, _kernels.next_uses(masks, 0)

    def _request_future(self, layer, t0, ids, masks):
        # the requests are the whole future: positions in the stream replace steps
        if masks is not None:
            self._layer_future(layer, t0, masks)
        elif t0 != 0 or self.future is not None:
            raise DipsimError("belady: run() takes a layer's whole request stream in one call (its future), on "
                              "a cache made without future=")
        R = ids.shape[0]
        return R + 1, _requests.next_use_positions(ids, self.N, R + 1)


_EMPTY = np.zeros(0, dtype=np.int64)
