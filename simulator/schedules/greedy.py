"""Greedy allocation of a mean keep over layers from per-layer error curves (after TEAL's block-wise
greedy, Liu et al. 2024, arXiv 2408.14690, which allocates sparsity among the matrices of each
transformer block by the block's output error; here the pieces are the layers of one matrix group).

Every layer starts dense (keep 1). Each step lowers by one grid step the keep of the layer whose step
costs the least error (the rise of its curve from its current level to the next one down; ties go to
the lower layer), until the keeps' sum reaches ``mean * L``; the last, partial step (less than one
grid step) goes to the layer the next full step would have gone to, so the mean over layers is
``mean`` exactly. No layer goes below ``floor``.
"""
from __future__ import annotations

import numpy as np

from common.errors import DipsimError


def levels(step: float) -> np.ndarray:
    """The grid of keeps an error curve is measured at: ``step, 2 step, ..., 1``."""
    n = int(round(1.0 / step))
    if n < 1 or not np.isclose(n * step, 1.0, atol=1e-9):
        raise DipsimError(f"greedy step {step:g} must divide 1 (0.05, 0.1, 0.125, ...)")
    return np.arange(1, n + 1) / n


def allocate(err: np.ndarray, mean: float, step: float, floor: float,
             weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row keeps from error curves ``err [R, K]`` measured at :func:`levels` ``(step)`` (a row: a
    layer, or a layer's group), every keep in ``[floor, 1]`` (``floor`` rounded up to the grid), with
    ``sum(w * keep) / sum(w) == mean`` exactly for the rows' ``weights`` (default all 1: the plain mean;
    a group's weights per layer, e.g. up/gate 2 and down 1, make it the mean over the weights read)."""
    return allocate_with_picks(err, mean, step, floor, weights)[0]


def allocate_with_picks(err: np.ndarray, mean: float, step: float, floor: float,
                        weights: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """:func:`allocate`, and the greedy's picks in order: ``(row, cost per weight)`` of each full step,
    the partial last step included."""
    grid = levels(step)
    e = np.asarray(err, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != len(grid):
        raise DipsimError(f"error curves must be [layers, {len(grid)}] (one per grid level), got {e.shape}")
    w = np.ones(e.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    lowest = int(np.searchsorted(grid, floor - 1e-9))
    if lowest >= len(grid) or mean < grid[lowest] - 1e-12:
        raise DipsimError(f"greedy: mean {mean:g} is below the floor {floor:g}")
    at = np.full(e.shape[0], len(grid) - 1)
    rows = np.arange(e.shape[0])
    left = (1.0 - mean) * w.sum() / step          # weighted grid steps still to take
    picks: list[tuple[int, float]] = []
    while left > 1e-9:
        movable = at > lowest
        if not movable.any():
            break
        cost = np.where(movable, (e[rows, np.maximum(at - 1, 0)] - e[rows, at]) / w, np.inf)
        r = int(np.argmin(cost))
        picks.append((r, float(cost[r])))
        if w[r] > left + 1e-9:                     # the partial last step: the mean comes out exact
            keep = grid[at].copy()
            keep[r] -= left / w[r] * step
            return keep, picks
        at[r] -= 1
        left -= w[r]
    return grid[at].copy(), picks
