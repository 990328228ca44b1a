"""random: k columns per layer uniformly at random, every token (a floor for the other policies).

    mask[l] = top-k of u,  u ~ Uniform(0, 1)^N  drawn per call from layer l's own generator

Each layer draws from a generator seeded by (seed, layer), so masks are reproducible and do not
depend on how replay splits the layers over threads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.params import number, param

from ..kernels import topk_mask
from .base import MaskingPolicy, register_masking


@register_masking("random")
@dataclass(frozen=True)
class Random(MaskingPolicy):
    seed: int = param(0, number(0, None, integer=True), "random: the seed of the per-layer generators", metavar="S")
    _first_layer: int = field(default=0, repr=False, compare=False)
    _rngs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def rows(self, l0, l1):
        return Random(seed=self.seed, _first_layer=self._first_layer + l0)

    def _select(self, scores, resident, k):
        u = np.empty(scores.shape, dtype=np.float32)
        for i in range(scores.shape[0]):
            layer = self._first_layer + i
            rng = self._rngs.get(layer)
            if rng is None:
                rng = self._rngs[layer] = np.random.default_rng([self.seed, layer])
            u[i] = rng.random(scores.shape[1], dtype=np.float32)
        return topk_mask(u, k)

    def select_layer(self, layer, scores, k):
        """All tokens' draws of the layer at once: one call for ``T`` rows of the layer's generator
        yields the same numbers as ``T`` calls of one row each, so the masks equal ``select``'s."""
        T, N = np.shape(scores)
        layer = self._first_layer + layer
        rng = self._rngs.get(layer)
        if rng is None:
            rng = self._rngs[layer] = np.random.default_rng([self.seed, layer])
        return topk_mask(rng.random((T, N), dtype=np.float32), np.full(T, int(k)))
