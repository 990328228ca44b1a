"""dip-ca: cache-aware DIP (Federici et al., MLSys 2025, "DIP-CA").

Per token and layer, with c = 1 for a column the layer's DRAM cache holds and 0 otherwise:
    s    = |a| * (c + gamma * (1 - c))          a = x (up/gate group) or GLU(x) (down group)
    mask = top-k of s

gamma in [0, 1] trades accuracy for hit rate: gamma = 1 is exactly ``dip``; smaller gamma favours
columns already in DRAM. Options:
* ``fixed_top_n``: the n columns with the largest raw score are exempt from the penalty (they are
  always ranked as if cached), so the most important inputs are never given up for cache hits.
* gamma = 0 is taken as the limit gamma -> 0+: cached (or exempt) columns first, ranked by |a|,
  then the others ranked by |a| -- rather than the literal product, which would make every
  uncached score 0 and pick uncached columns by index alone. So with gamma = 0 an uncached column
  is never picked while k cached ones exist.
Ties: lowest column index first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.params import number, param

from ..kernels import SELECT_DIPCA, penalize, topk_mask
from .base import MaskingPolicy, register_masking


def gamma_param():
    """The cache-aware policies' gamma (dip-ca, cats-ca): one declaration for both."""
    return param(0.2, number(0, 1), "dip-ca, cats-ca: the score factor of uncached columns (neurons), in [0, 1] "
                                    "(1 = no penalty: dip, cats; 0: cached ones first)", metavar="G")


def fixed_top_n_param():
    return param(0, number(0, None, integer=True), "dip-ca, cats-ca (selection topk): the N columns (neurons) with the "
                                                   "largest raw score are exempt from the penalty", metavar="N")


@register_masking("dip-ca")
@dataclass(frozen=True)
class DIPCA(MaskingPolicy):
    gamma: float = gamma_param()
    fixed_top_n: int = fixed_top_n_param()

    cache_aware = True

    def row_rule(self):
        return SELECT_DIPCA, np.array([self.gamma, float(self.fixed_top_n)])

    def _select(self, scores, resident, k):
        favoured = resident
        if self.fixed_top_n > 0:
            n = np.minimum(self.fixed_top_n, scores.shape[1])
            favoured = resident | topk_mask(scores, np.full(scores.shape[0], n))
        if self.gamma == 1.0:
            return topk_mask(scores, k)
        if self.gamma > 0.0:
            return topk_mask(penalize(scores, favoured, self.gamma), k)
        # gamma = 0: favoured columns first (by score), then the rest (by score)
        n_fav = np.count_nonzero(favoured, axis=1)
        enough = n_fav >= k
        first = topk_mask(np.where(favoured, scores, -np.inf), np.minimum(k, n_fav))
        rest = topk_mask(np.where(favoured, -np.inf, scores), np.where(enough, 0, k - n_fav))
        return first | rest
