"""glu-prune: prune only W_down's columns by top-k |GLU(x)|; W_up and W_gate stay dense.

The CATS / TEAL-style baseline of the DIP paper: up and gate must be computed in full to know
GLU(x), so only the down projection saves reads.
    up/gate group: mask = all columns
    down group:    mask = top-k of |GLU(x)|
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import MaskingPolicy, register_masking, topk_mask


@register_masking("glu-prune")
@dataclass(frozen=True)
class GLUPrune(MaskingPolicy):
    prunes = ("down",)

    def _select(self, scores, resident, k):
        return topk_mask(scores, k)
