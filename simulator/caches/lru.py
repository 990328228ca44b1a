"""lru: least recently used (the DIP paper's cache policy).

    access(x): if x cached: hit, x becomes most recent
               else: miss; if full: evict the least recently used; insert x as most recent

Within one step the set's columns count as accessed in ascending index order, so among columns
last used in the same step the lowest index is the least recent. Key = last_step * N + index.
"""
from __future__ import annotations

import numpy as np

from .base import KeyedCache, register_cache


@register_cache("lru")
class LRU(KeyedCache):
    def __init__(self, n_layers, n_columns, capacity):
        super().__init__(n_layers, n_columns, capacity)
        self.last = np.full((self.L, self.N), -1, dtype=np.int64)

    def _touch(self, mask, hits, misses):
        np.copyto(self.last, self.t, where=mask)

    def _key(self, layer, idx):
        return self.last[layer, idx] * self.N + idx
