"""lfu: least frequently used, in-cache counts, ties to the least recently used.

    access(x): if x cached: hit, freq[x] += 1
               else: miss; if full: evict the cached column with the smallest freq
                     (ties: least recently used, then lowest index); insert x with freq 1

A column's count is forgotten when it is evicted (in-cache LFU, as libCacheSim's LFU).
Key = (freq, last_step, index), kept as two arrays (``freq`` and ``prio``, the step of last use or,
after requests, a stamp in its order): no bound on the number of steps or on a count (one integer
for both once capped a layer at 2^24 steps).
"""
from __future__ import annotations

from . import _kernels
from .base import KeyedCache, register_cache


@register_cache("lfu")
class LFU(KeyedCache):
    KIND = _kernels.LFU
