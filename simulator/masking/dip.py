"""dip: Dynamic Input Pruning (Federici et al., MLSys 2025), no predictor.

Per token and layer:
    up/gate group: mask = top-k of |x|          (x: the MLP input; selects columns of W_up, W_gate)
    down group:    mask = top-k of |GLU(x)|     (selects columns of W_down, indexed by d_ff)

W_gate shares W_up's mask unless a separate gate keep is configured (replay's ``keep_gate``); keeps
may differ per group and per layer. Ties: lowest column index first.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import MaskingPolicy, register_masking, topk_mask


@register_masking("dip")
@dataclass(frozen=True)
class DIP(MaskingPolicy):
    def _select(self, scores, resident, k):
        return topk_mask(scores, k)
