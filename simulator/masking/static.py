"""static: the same columns every token -- hot neurons pinned, chosen on a calibration prefix.

Calibration over the prefix scores ``[T, L, N]``:
    hot[l] = top-k[l] columns of mean_t score[t, l, :]        (ties: lowest index)
Per token:
    mask = hot          (independent of the token: a static pruning baseline)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.errors import DipsimError

from ..kernels import topk_mask
from .base import MaskingPolicy, as_k, calibration_prefix, register_masking


@register_masking("static")
@dataclass(frozen=True)
class Static(MaskingPolicy):
    hot: np.ndarray | None = field(default=None, repr=False, compare=False)

    needs_calibration = True

    def calibrate(self, prefix, k):
        prefix = calibration_prefix(prefix, "static")
        _, L, N = prefix.shape
        return Static(hot=topk_mask(prefix.mean(axis=0), as_k(k, L, N)))

    def rows(self, l0, l1):
        return self if self.hot is None else Static(hot=self.hot[l0:l1])

    def _select(self, scores, resident, k):
        if self.hot is None:
            raise DipsimError("masking policy 'static' must be calibrated on a trace prefix before use")
        if self.hot.shape != scores.shape:
            raise DipsimError(f"static was calibrated for shape {list(self.hot.shape)}, got {list(scores.shape)}")
        return self.hot.copy()

    def select_layer(self, layer, scores, k):
        if self.hot is None:
            raise DipsimError("masking policy 'static' must be calibrated on a trace prefix before use")
        return np.broadcast_to(self.hot[layer], np.shape(scores)).copy()
