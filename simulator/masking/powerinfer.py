"""powerinfer: PowerInfer's hot/cold neuron split (Song et al., SOSP 2024; PowerInfer-2, Xue et al.,
arXiv 2406.06282) -- hot neurons pinned in DRAM, cold ones predicted per token and fetched from
flash through a neuron-level LRU.

Offline (on the calibration prefix of ``calib_tokens`` tokens, as PowerInfer profiles activations):
    freq[l, i] = share of tokens in which neuron i is active     ("active": among the layer's top-k |h|)
    hot[l]     = the hot_fraction x capacity neurons of highest freq    (the pinned cache's hot set)
Per token and layer, as ``dejavu``:
    mask = the neurons the look-ahead predictor selects (top-k of its logits, or above a probability)
    hot neurons are always in DRAM; the others go through the LRU part of the cache

The residency is the ``pinned`` cache's (``cache: pinned``, whose ``hot_fraction`` sets the hot
share of the layer's budget; other caches are refused), primed with ``freq`` rather than with the
mean score. A neuron is its gate row, up row and down column, bundled on flash as PowerInfer-2
stores them (80% co-activation of the three, they report). The reads of predicted cold neurons are
issued a layer ahead, as Deja Vu's; ``oracle: true`` predicts the true top-k.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import topk_mask
from .base import as_k, calibration_prefix, register_masking
from .dejavu import DejaVu


@register_masking("powerinfer")
@dataclass(frozen=True)
class PowerInfer(DejaVu):
    cache_policies = ("pinned",)

    def hot_scores(self, prefix, k):
        """Activation frequency: the share of the prefix's tokens in which each neuron is among the
        layer's top-k by |h| (ties broken towards the higher mean |h|, then the lower index)."""
        prefix = calibration_prefix(prefix, "powerinfer")
        T, L, N = prefix.shape
        kk = as_k(k, L, N)
        freq = np.zeros((L, N))
        for t in range(T):
            freq += topk_mask(prefix[t], kk)
        mean = prefix.mean(axis=0)
        return freq / T + 1e-6 * mean / np.maximum(mean.max(axis=1, keepdims=True), 1e-30)
