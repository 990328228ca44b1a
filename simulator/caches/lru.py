"""lru: least recently used (the DIP paper's cache policy).

    access(x): if x cached: hit, x becomes most recent
               else: miss; if full: evict the least recently used; insert x as most recent

Within one step the set's columns count as accessed in ascending index order, so among columns
last used in the same step the lowest index is the least recent: key = last_step * N + index.
"""
from __future__ import annotations

from . import _kernels
from .base import KeyedCache, register_cache


@register_cache("lru")
class LRU(KeyedCache):
    KIND = _kernels.LRU
