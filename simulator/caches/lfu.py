"""lfu: least frequently used, in-cache counts, ties to the least recently used.

    access(x): if x cached: hit, freq[x] += 1
               else: miss; if full: evict the cached column with the smallest freq
                     (ties: least recently used, then lowest index); insert x with freq 1
A column's count is forgotten when it is evicted (in-cache LFU, as in libCacheSim's LFU).
Key = (freq * (S + 1) + last_step) * N + index, S bounding the step count.
"""
from __future__ import annotations

import numpy as np

from .base import KeyedCache, register_cache

_STEPS = 1 << 24  # bound on steps folded into the key (16.7 M tokens)


@register_cache("lfu")
class LFU(KeyedCache):
    def __init__(self, n_layers, n_columns, capacity):
        super().__init__(n_layers, n_columns, capacity)
        self.freq = np.zeros((self.L, self.N), dtype=np.int64)
        self.last = np.full((self.L, self.N), -1, dtype=np.int64)

    def _touch(self, mask, hits, misses):
        self.freq += mask  # hits count up, misses start at 1 (their count was reset on eviction)
        np.copyto(self.last, self.t, where=mask)

    def _key(self, layer, idx):
        return (self.freq[layer, idx] * _STEPS + self.last[layer, idx]) * self.N + idx

    def _evicted(self, victims):
        self.freq[victims] = 0
