"""random: k columns per layer uniformly at random, every token (a floor for the other policies).

    mask = top-k of u,  u ~ Uniform(0, 1)^[L, N]  drawn fresh per call from a seeded generator

Reproducible: the same seed and the same sequence of calls give the same masks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import MaskingPolicy, register_masking, topk_mask


@register_masking("random")
@dataclass(frozen=True)
class Random(MaskingPolicy):
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    def _select(self, scores, resident, k):
        return topk_mask(self._rng.random(scores.shape, dtype=np.float32), k)
