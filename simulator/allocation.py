"""How the DRAM cache budget is split over layers and matrix groups.

* ``uniform`` (the DIP paper's): every layer and group caches the same fraction of its columns,
  ``capacity = floor(budget / mlp_bytes * N)``.
* ``benefit``: greedy by measured benefit. On the calibration prefix, each (group, layer) gets its
  LRU hit curve ``H(c)`` from one stack-distance pass over top-k masks of its scores; the budget
  then goes, step by step, to the (group, layer) and size ``c' > c`` with the most hits per column
  added, ``(H(c') - H(c)) / (c' - c)`` -- the flash bytes saved per byte of DRAM, since a group's
  column costs and saves the same bytes. Looking ahead to the best ``c'`` (not just ``c + 1``) keeps
  the greedy from stalling on flat stretches of a curve.

Both return ``{group: capacity [L] ints}``; budgets are in bytes.
"""
from __future__ import annotations


import numpy as np

from common.errors import DipsimError

from .kernels import lru_stack_hits, topk_mask

SCHEMES = ("uniform", "benefit")
#: parameters of the benefit scheme (its grid of cache sizes per layer)
PARAMS = ("steps",)


def allocate(name: str, groups, L: int, budget: float, *, calib: dict[str, np.ndarray] | None = None,
             steps: int = 64) -> dict[str, np.ndarray]:
    if name not in SCHEMES:
        raise DipsimError(f"unknown allocation {name!r}; allowed: {', '.join(SCHEMES)}")
    mlp_bytes = sum(g.n_columns * g.bytes_per_column for g in groups) * L
    if budget <= 0:
        return {g.name: np.zeros(L, dtype=np.int64) for g in groups}
    if name == "uniform" or budget >= mlp_bytes:
        f = min(budget / mlp_bytes, 1.0)
        return {g.name: np.full(L, int(np.floor(f * g.n_columns + 1e-9)), dtype=np.int64) for g in groups}
    if calib is None:
        raise DipsimError("allocation 'benefit' needs a calibration prefix of the trace")
    return _benefit(groups, L, budget, calib, steps)


def _benefit(groups, L: int, budget: float, calib: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:

    curves, grids, costs, names = [], [], [], []
    for g in groups:
        scores = calib[g.name]
        k = g.k()
        masks = [topk_mask(s, k) if g.pruned else np.ones(s.shape, dtype=bool) for s in scores]
        H = lru_stack_hits(masks, L, g.n_columns)            # [L, N + 1]
        grid = np.unique(np.linspace(0, g.n_columns, steps + 1).round().astype(int))
        for layer in range(L):
            curves.append(H[layer, grid].astype(float))
            grids.append(grid)
            costs.append(g.bytes_per_column)
            names.append((g.name, layer))
    pos = np.zeros(len(curves), dtype=int)          # index into each grid
    left = budget
    while True:
        best, best_gain, best_to = -1, 0.0, -1
        for i, (Hc, grid) in enumerate(zip(curves, grids)):
            p = pos[i]
            if p + 1 >= len(grid):
                continue
            dc = grid[p + 1:] - grid[p]
            affordable = dc * costs[i] <= left + 1e-9
            if not affordable.any():
                continue
            gain = (Hc[p + 1:] - Hc[p]) / dc
            gain = np.where(affordable, gain, -np.inf)
            j = int(np.argmax(gain))
            if gain[j] > best_gain:
                best, best_gain, best_to = i, float(gain[j]), p + 1 + j
        if best < 0:
            break
        left -= (grids[best][best_to] - grids[best][pos[best]]) * costs[best]
        pos[best] = best_to
    out = {g.name: np.zeros(L, dtype=np.int64) for g in groups}
    for i, (gname, layer) in enumerate(names):
        out[gname][layer] = grids[i][pos[i]]
    return out
