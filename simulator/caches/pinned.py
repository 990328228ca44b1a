"""pinned: a static hot set held for good, plus LRU for the rest of the capacity.

    at start: pin the top (hot_fraction * capacity) columns of each layer by hot score
              (e.g. mean |activation| over a calibration prefix, given through prime())
    access(x): pinned columns always hit; the others behave as in lru with the remaining capacity

Until prime() is called nothing is pinned and the policy is plain LRU. Pinned columns are loaded
before the first token (like weights loaded with the model), so they hit from the start.
"""
from __future__ import annotations

import numpy as np

from common.errors import DipsimError

from ..kernels import topk_mask
from .base import register_cache
from .lru import LRU


@register_cache("pinned")
class Pinned(LRU):
    def __init__(self, n_layers, n_columns, capacity, hot_fraction: float = 0.5, step_model="set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        if not 0.0 <= float(hot_fraction) <= 1.0:
            raise DipsimError(f"pinned hot_fraction must be in [0, 1], got {hot_fraction}")
        self.hot_fraction = float(hot_fraction)
        self.pinned = np.zeros((self.L, self.N), dtype=bool)

    def prime(self, hot_scores):
        if self.t > 0:
            raise DipsimError("pinned: prime() sets the hot set before the first step")
        hot_scores = np.asarray(hot_scores, dtype=np.float64)
        if hot_scores.shape != (self.L, self.N):
            raise DipsimError(f"pinned: hot scores must have shape {[self.L, self.N]}, got {list(hot_scores.shape)}")
        n = np.floor(self.hot_fraction * self.capacity).astype(np.int64)
        self.pinned = topk_mask(hot_scores, n)
        self._evictable = ~self.pinned
        self._resident = self.pinned.copy()
