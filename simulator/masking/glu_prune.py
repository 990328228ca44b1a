"""glu-prune: prune only W_down's columns by top-k |GLU(x)|; W_up and W_gate stay dense.

The CATS / TEAL-style baseline of the DIP paper: up and gate must be computed in full to know
GLU(x), so only the down projection saves reads.
    up/gate group: mask = all columns
    down group:    mask = top-k of |GLU(x)|
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import topk_mask, topk_rows
from .base import MaskingPolicy, register_masking


@register_masking("glu-prune")
@dataclass(frozen=True)
class GLUPrune(MaskingPolicy):
    prunes = ("down",)

    def _select(self, scores, resident, k):
        return topk_mask(scores, k)

    def select_layer(self, layer, scores, k):
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        out = np.empty(scores.shape, dtype=bool)
        topk_rows(scores, int(k), out)   # compiled; the same masks as topk_mask
        return out
