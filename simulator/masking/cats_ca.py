"""cats-ca: DIP-CA's cache-aware score applied to CATS's neuron selection (no published system has
it; dipsim measures whether it moves the Pareto front).

Per token and layer, with a_i = act(W_gate x)_i and c_i = 1 for a neuron the layer's DRAM cache
holds (0 otherwise):
    s_i = |a_i| * (c_i + gamma * (1 - c_i))
    selection: threshold ->  keep i where s_i > tau[l]     (tau calibrated as in ``cats``, on |a|)
    selection: topk      ->  keep the top-k of s            (k = keep x d_ff: dip-ca's rule, fixed count)

gamma = 1 is ``cats`` (threshold) or a top-k CATS; smaller gamma favours neurons already in DRAM.
With the threshold an uncached neuron must clear tau / gamma, so the count per token falls (fewer
misses, not more hits); with top-k the count stays k and cached neurons displace uncached ones, as
in dip-ca (``fixed_top_n`` and gamma = 0 mean what they mean there). Both run in the cache's
compiled loop (``kernels.select_row``). W_gate stays dense, as in ``cats``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import DipsimError
from common.params import choice, param

from ..kernels import SELECT_DIPCA, SELECT_THRESHOLD_CA, penalize
from .base import register_masking
from .cats import CATS
from .dip_ca import DIPCA, fixed_top_n_param, gamma_param

SELECTIONS = ("threshold", "topk")


@register_masking("cats-ca")
@dataclass(frozen=True)
class CATSCA(CATS):
    gamma: float = gamma_param()
    selection: str = param("threshold", choice(*SELECTIONS, kind="cats-ca selection"),
                        "cats-ca: threshold (CATS's calibrated threshold on the penalized score) or topk (the top "
                        "keep of it, dip-ca's rule)", metavar="S")
    fixed_top_n: int = fixed_top_n_param()

    cache_aware = True

    def __post_init__(self):
        super().__post_init__()
        if self.fixed_top_n and self.selection != "topk":
            raise DipsimError("cats-ca fixed_top_n applies to selection topk (a threshold has no top n to exempt)")

    def row_rule(self):
        if self.selection == "topk":
            return SELECT_DIPCA, np.array([self.gamma, float(self.fixed_top_n)])
        return SELECT_THRESHOLD_CA, np.array([self.gamma, self.taus(1)[0]])

    def _select(self, scores, resident, k):
        if self.selection == "topk":
            return DIPCA(gamma=self.gamma, fixed_top_n=self.fixed_top_n)._select(scores, resident, k)
        return penalize(scores, resident, self.gamma) > self.taus(scores.shape[0])[:, None]
