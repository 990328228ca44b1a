"""Compiled helper for DIP-CA's score penalty (numba when installed, numpy otherwise)."""
from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover
    numba = None

if numba is not None:
    @numba.njit(cache=True, nogil=True)
    def _penalize(scores, favoured, gamma, out):
        L, N = scores.shape
        for i in range(L):
            for j in range(N):
                s = scores[i, j]
                out[i, j] = s if favoured[i, j] else s * gamma


def penalize(scores: np.ndarray, favoured: np.ndarray, gamma: float) -> np.ndarray:
    """``scores * (c + gamma * (1 - c))`` with ``c = favoured``, as float32 ``[L, N]``."""
    g = np.float32(gamma)
    if numba is not None and scores.dtype == np.float32:
        out = np.empty(scores.shape, dtype=np.float32)
        _penalize(scores, favoured, g, out)
        return out
    return np.where(favoured, scores, scores * g).astype(np.float32, copy=False)
