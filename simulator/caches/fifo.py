"""fifo: first in, first out; a hit changes nothing.

    access(x): if x cached: hit
               else: miss; if full: evict the column inserted earliest; insert x

Columns inserted in the same step enter in ascending index order. Key = insert_step * N + index.
"""
from __future__ import annotations

import numpy as np

from .base import KeyedCache, register_cache


@register_cache("fifo")
class FIFO(KeyedCache):
    def __init__(self, n_layers, n_columns, capacity):
        super().__init__(n_layers, n_columns, capacity)
        self.inserted = np.full((self.L, self.N), -1, dtype=np.int64)

    def _touch(self, mask, hits, misses):
        np.copyto(self.inserted, self.t, where=misses)

    def _key(self, layer, idx):
        return self.inserted[layer, idx] * self.N + idx
