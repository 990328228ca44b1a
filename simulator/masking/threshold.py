"""threshold: per-layer magnitude thresholds calibrated on a trace prefix (TEAL-like).

Calibration, per layer l, over the prefix's T*N scores of that layer:
    tau[l] = the (1 - keep[l]) quantile of the prefix scores     (keep[l] = k[l] / N)
Per token:
    mask[l, n] = score[l, n] > tau[l]
so on the prefix each layer keeps keep[l] of its columns on average while the per-token count
varies with the token (TEAL, ICLR 2025, uses such thresholds on hidden states).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from common.errors import DipsimError

from .base import MaskingPolicy, as_k, calibration_prefix, register_masking


@register_masking("threshold")
@dataclass(frozen=True)
class Threshold(MaskingPolicy):
    thresholds: tuple[float, ...] | None = field(default=None, repr=False)

    needs_calibration = True

    def calibrate(self, prefix, k):
        prefix = calibration_prefix(prefix, "threshold")
        T, L, N = prefix.shape
        kk = as_k(k, L, N)
        taus = []
        for layer in range(L):
            vals = prefix[:, layer, :].ravel()
            n_keep = int(round(kk[layer] / N * vals.size))
            if n_keep <= 0:
                taus.append(float(np.inf))
            elif n_keep >= vals.size:
                taus.append(float(-np.inf))
            else:   # the (n_keep + 1)-th largest: scores strictly above it are n_keep of them (ties aside)
                j = vals.size - n_keep - 1
                taus.append(float(np.partition(vals, j)[j]))
        return dataclasses.replace(self, thresholds=tuple(taus))

    def rows(self, l0, l1):
        return self if self.thresholds is None else dataclasses.replace(self, thresholds=self.thresholds[l0:l1])

    def taus(self, n_layers: int) -> np.ndarray:
        """The calibrated thresholds ``[L]`` (float64), checked against the layers they serve."""
        if self.thresholds is None:
            raise DipsimError(f"masking policy {self.name!r} must be calibrated on a trace prefix before use")
        if len(self.thresholds) != n_layers:
            raise DipsimError(f"{self.name} was calibrated for {len(self.thresholds)} layers, got {n_layers}")
        return np.asarray(self.thresholds, dtype=np.float64)

    def select_layer(self, layer, scores, k):
        if self.thresholds is None:
            raise DipsimError(f"masking policy {self.name!r} must be calibrated on a trace prefix before use")
        return np.asarray(scores) > np.float64(self.thresholds[layer])

    def _select(self, scores, resident, k):
        return scores > self.taus(scores.shape[0])[:, None]
