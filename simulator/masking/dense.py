"""dense: every column, every token (the unpruned model; k is ignored).

    mask[l, n] = True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import MaskingPolicy, register_masking


@register_masking("dense")
@dataclass(frozen=True)
class Dense(MaskingPolicy):
    prunes = ()

    def _select(self, scores, resident, k):
        return np.ones(scores.shape, dtype=bool)

    def select_layer(self, layer, scores, k):
        return np.ones(np.shape(scores), dtype=bool)
