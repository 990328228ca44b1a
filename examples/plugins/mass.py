"""dip-mass: DIP that stops early -- a masking policy kept outside dipsim (a plugin).

Per token and layer, keep the highest-scoring columns (|x| for up/gate, |GLU(x)| for down) until
they hold a share ``mass`` of the layer's total score, but never more than k (the run's keep): a
token whose activations are concentrated reads fewer columns than DIP, a flat one the same k.
Ties: the lowest column index first, as in the built-in policies.

    dipsim replay --plugin examples/plugins/mass.py --trace T --masking dip-mass --mass 0.8 --keep 0.5
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.params import number, param
from simulator.masking import MaskingPolicy, register_masking


@register_masking("dip-mass")
@dataclass(frozen=True)
class DIPMass(MaskingPolicy):
    mass: float = param(0.9, number(0, 1, lo_open=True), "dip-mass: the share of the layer's total score the kept "
                                                         "columns must hold (at most k of them)", metavar="F")

    def _select(self, scores, resident, k):
        rows, n = scores.shape
        order = np.argsort(-scores, axis=1, kind="stable")           # best first, ties to the lowest index
        held = np.cumsum(np.take_along_axis(scores, order, axis=1), axis=1, dtype=np.float64)
        need = np.count_nonzero(held < self.mass * held[:, -1:], axis=1) + 1
        mask = np.zeros((rows, n), dtype=bool)
        np.put_along_axis(mask, order, np.arange(n)[None, :] < np.minimum(need, k)[:, None], axis=1)
        return mask

    def select_layer(self, layer, scores, k):
        """All tokens of a layer in one call (rows are tokens here): the same masks, vectorized."""
        scores = np.asarray(scores, dtype=np.float32)
        return self._select(scores, None, np.full(scores.shape[0], int(k)))
