"""The Pareto front of a search's trials: the feasible trials no other feasible trial dominates.

Values are minimized (``Objective.sign`` turns a maximized metric around). Trial a dominates trial b
when a is no worse in every objective and better in at least one; equal trials do not dominate each
other, so both stay on the front.
"""
from __future__ import annotations

import numpy as np


def nondominated(values: np.ndarray, feasible: np.ndarray | None = None) -> np.ndarray:
    """Indices (ascending) of the rows of ``values`` ``[n, k]`` (to be minimized) that no other row
    dominates, among the ``feasible`` ones (default all). NaN rows are never on the front."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be [n, k], got shape {v.shape}")
    ok = ~np.isnan(v).any(axis=1)
    if feasible is not None:
        ok &= np.asarray(feasible, dtype=bool)
    idx = np.flatnonzero(ok)
    cand = v[idx]
    keep = np.ones(len(idx), dtype=bool)
    for i in range(len(idx)):      # n is the trial count (tens to hundreds): O(n^2 k) is nothing
        no_worse = (cand <= cand[i]).all(axis=1)
        better = (cand < cand[i]).any(axis=1)
        keep[i] = not (no_worse & better).any()
    return idx[keep]


def closest(violation: np.ndarray, n: int = 5) -> np.ndarray:
    """Indices of the ``n`` trials nearest to feasible: smallest sum of positive constraint violations."""
    v = np.asarray(violation, dtype=float)
    total = np.where(np.isnan(v), np.inf, np.clip(v, 0, None)).sum(axis=1) if v.ndim == 2 else np.zeros(0)
    return np.argsort(total, kind="stable")[:n]
