"""lfu-decay: least frequently used, with counts that fade -- a cache policy kept outside dipsim.

Each column's count halves every ``half_life`` steps (tokens) and gains 1 per access; the resident
column with the lowest faded count is evicted first (ties: the one used longest ago, then the lowest
index). Plain LFU never forgets a column that was hot early; this one does.

It is written on ``simulator.caches.PythonCache``: two hooks (``on_access``, ``evict_order``), and
the base class keeps dipsim's step semantics (a token's columns are one set; a set larger than the
capacity keeps ``capacity`` of its own columns).

    dipsim replay --plugin examples/plugins/decay.py --trace T --cache lfu-decay --cache-params half_life=16
"""
from __future__ import annotations

import numpy as np

from common.params import number
from simulator.caches import PythonCache, register_cache


@register_cache("lfu-decay")
class DecayedLFU(PythonCache):
    def __init__(self, n_layers, n_columns, capacity, half_life: float = 32.0, step_model: str = "set"):
        super().__init__(n_layers, n_columns, capacity, step_model)
        self.half_life = number(0, None, lo_open=True)(half_life, "lfu-decay half_life")
        self.count = np.zeros((self.L, self.N))     # per layer: the state of one layer is its own row
        self.last = np.zeros((self.L, self.N))

    def faded(self, layer, cols, t):
        return self.count[layer, cols] * 0.5 ** ((t - self.last[layer, cols]) / self.half_life)

    def on_access(self, layer, cols, hits, t):
        self.count[layer, cols] = self.faded(layer, cols, t) + 1.0
        self.last[layer, cols] = t

    def evict_order(self, layer, cols, t):
        return cols[np.lexsort((self.last[layer, cols], self.faded(layer, cols, t)))]
