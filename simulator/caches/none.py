"""none: no DRAM cache; every selected column is read from flash every token.

    access(x): miss; nothing is kept
"""
from __future__ import annotations

from .base import CachePolicy, register_cache


@register_cache("none")
class NoCache(CachePolicy):
    def __init__(self, n_layers, n_columns, capacity=0):
        super().__init__(n_layers, n_columns, 0)

    def _step(self, mask, hits):
        pass
