"""belady: Belady's MIN / OPT, the offline optimum -- evict the column whose next use is farthest.

    access(x): if x cached: hit
               else: miss; if full: evict the cached column whose next access is farthest in
                     the future (never again = farthest; ties: lowest index); insert x

It needs the whole access sequence up front (``future``: masks ``[T, L, N]``), so it serves only
cache-oblivious masking, whose masks do not depend on the cache. Each step must be exactly the
next mask of ``future``; anything else is refused rather than turned into a meaningless number.
Key = (T + 1 - next_use) * N + index.
"""
from __future__ import annotations

import numpy as np

from traces.errors import DipsimError

from .base import KeyedCache, register_cache


@register_cache("belady")
class Belady(KeyedCache):
    offline = True

    def __init__(self, n_layers, n_columns, capacity, future=None):
        super().__init__(n_layers, n_columns, capacity)
        if future is None:
            raise DipsimError("cache policy 'belady' (offline OPT) needs the whole access sequence: "
                              "future=[T, L, N] masks; it cannot serve cache-aware masking or the closed loop")
        future = np.asarray(future)
        if future.ndim != 3 or future.shape[1:] != (self.L, self.N) or future.dtype != bool:
            raise DipsimError(f"belady: future must be bool masks of shape [T, {self.L}, {self.N}], got "
                              f"{future.dtype} {list(future.shape)}")
        self.future = future
        self.T = future.shape[0]
        # next use of every column after each step: one backward pass
        self._next_after: list[np.ndarray] = [np.empty(0, np.int64)] * self.T
        nxt = np.full((self.L, self.N), self.T + 1, dtype=np.int64)
        for t in range(self.T - 1, -1, -1):
            m = future[t]
            self._next_after[t] = nxt[m]
            nxt[m] = t
        self.next_use = nxt  # before the first step: each column's first use

    def step(self, mask):
        if self.t >= self.T:
            raise DipsimError(f"belady: step {self.t} beyond the {self.T} steps of its future")
        if not np.array_equal(np.asarray(mask), self.future[self.t]):
            raise DipsimError(f"belady: step {self.t} differs from the future it was given; OPT only replays "
                              f"a fixed access sequence (cache-oblivious masking, open loop)")
        return super().step(mask)

    def _touch(self, mask, hits, misses):
        self.next_use[mask] = self._next_after[self.t]

    def _key(self, layer, idx):
        return (self.T + 1 - self.next_use[layer, idx]) * self.N + idx
