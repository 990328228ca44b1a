"""dip: Dynamic Input Pruning (Federici et al., MLSys 2025), no predictor.

Per token and layer:
    up/gate group: mask = top-k of |x|          (x: the MLP input; selects columns of W_up, W_gate)
    down group:    mask = top-k of |GLU(x)|     (selects columns of W_down, indexed by d_ff)

W_gate shares W_up's mask unless a separate gate keep is configured (replay's ``keep_gate``); keeps
may differ per group and per layer. Ties: lowest column index first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import topk_mask, topk_rows
from .base import MaskingPolicy, register_masking


@register_masking("dip")
@dataclass(frozen=True)
class DIP(MaskingPolicy):
    def _select(self, scores, resident, k):
        return topk_mask(scores, k)

    def select_layer(self, layer, scores, k):
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        out = np.empty(scores.shape, dtype=bool)
        topk_rows(scores, int(k), out)   # compiled; the same masks as topk_mask
        return out
