"""none: no DRAM cache; every selected column is read from flash every token.

    access(x): miss; nothing is kept

It is LRU with no capacity: every step's set is larger than the capacity, so each column passes
through and is dropped (the same compiled loop, and no special case anywhere else).
"""
from __future__ import annotations

from .base import register_cache
from .lru import LRU


@register_cache("none")
class NoCache(LRU):
    def __init__(self, n_layers, n_columns, capacity=0, step_model="set"):
        super().__init__(n_layers, n_columns, 0, step_model)
