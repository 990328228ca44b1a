"""none: no DRAM cache; every selected column is read from flash every token.

    access(x): miss; nothing is kept
"""
from __future__ import annotations

import numpy as np

from .base import CachePolicy, register_cache


@register_cache("none")
class NoCache(CachePolicy):
    def __init__(self, n_layers, n_columns, capacity=0):
        super().__init__(n_layers, n_columns, 0)

    def _step_rows(self, mask, hits, sel, hc, l0, l1, worker):
        hits[l0:l1] = False
        sel[l0:l1] = np.count_nonzero(mask[l0:l1], axis=1)
        hc[l0:l1] = 0
