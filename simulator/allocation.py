"""How the DRAM cache budget is split over layers and matrix groups: allocation schemes, registered
under the names used in YAML and on the CLI (``allocation: benefit``), like the masking and cache
policies.

* ``uniform`` (the DIP paper's): every layer and group caches the same fraction of its columns,
  ``capacity = floor(budget / mlp_bytes * N)``.
* ``benefit``: greedy by measured benefit. On the calibration prefix, each (group, layer) gets its
  LRU hit curve ``H(c)`` from one stack-distance pass over top-k masks of its scores; the budget
  then goes, step by step, to the (group, layer) and size ``c' > c`` with the most hits per column
  added, ``(H(c') - H(c)) / (c' - c)`` -- the flash bytes saved per byte of DRAM, since a group's
  column costs and saves the same bytes. Looking ahead to the best ``c'`` (not just ``c + 1``) keeps
  the greedy from stalling on flat stretches of a curve.

A scheme is a frozen dataclass whose parameters are declared with ``common.params.param`` (checked
like a masking policy's) and whose ``split(groups, L, budget, calib)`` returns
``{group: capacity [L] ints}``; budgets are in bytes. :func:`allocate` handles the budgets every
scheme treats alike (none; the whole MLP) and checks what a scheme returns (whole columns, within
the group, within the budget), so that a scheme from a plugin cannot hand replay a bad split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from common.errors import DipsimError
from common.params import number, param, params_of
from common.registry import Registry, check_params

from .kernels import lru_stack_hits, topk_mask

REGISTRY = Registry("allocation")
register_allocation = REGISTRY.register


def names() -> list[str]:
    """The registered schemes, the default (uniform) first."""
    return list(REGISTRY)


def parameters(name: str) -> list[str]:
    return [f.name for f in params_of(REGISTRY.get_class(name))]


@dataclass(frozen=True)
class Allocation:
    """Base of the allocation schemes: parameters checked by their declarations; ``split`` fills in."""

    name: ClassVar[str] = "?"
    #: reads a calibration prefix of the trace (replay then passes ``calib``)
    needs_calibration: ClassVar[bool] = False

    def __post_init__(self):
        for f in params_of(type(self)):
            object.__setattr__(self, f.name, f.metadata["check"](getattr(self, f.name), f"{self.name} {f.name}"))

    def split(self, groups, L: int, budget: float, calib: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        raise NotImplementedError


def make(name: str, **params: Any) -> Allocation:
    """Build a registered scheme; unknown names and parameters are refused with the valid ones listed."""
    cls = REGISTRY.get_class(name)
    check_params("allocation", name, params, parameters(name))
    return cls(**params)


def checked_params(name: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    """``params`` of scheme ``name`` as given, each value checked by its declaration (``where``: the
    location of ``allocation_params``)."""
    fields = {f.name: f for f in params_of(REGISTRY.get_class(name))}
    if params and not fields:        # say which scheme takes them
        others = [f"{n} takes {', '.join(parameters(n))}" for n in names() if parameters(n)]
        raise DipsimError(f"{where}: the {name} allocation takes no parameters" +
                          (f" ({'; '.join(others)})" if others else ""))
    for k in params:
        if k not in fields:
            raise DipsimError(f"{where}: allocation {name!r} has no parameter {k!r}; its parameters: "
                              f"{', '.join(fields)}")
    return {k: fields[k].metadata["check"](v, f"{where}.{k}") for k, v in params.items()}


def _uniform(groups, L: int, fraction: float) -> dict[str, np.ndarray]:
    return {g.name: np.full(L, int(np.floor(fraction * g.n_columns + 1e-9)), dtype=np.int64) for g in groups}


def allocate(name: str, groups, L: int, budget: float, *, calib: dict[str, np.ndarray] | None = None,
             **params: Any) -> dict[str, np.ndarray]:
    scheme = make(name, **params)
    mlp_bytes = sum(g.n_columns * g.bytes_per_column for g in groups) * L
    if budget <= 0:
        return {g.name: np.zeros(L, dtype=np.int64) for g in groups}
    if budget >= mlp_bytes:
        return _uniform(groups, L, 1.0)
    if scheme.needs_calibration and calib is None:
        raise DipsimError(f"allocation {name!r} needs a calibration prefix of the trace")
    return _checked(name, scheme.split(groups, L, budget, calib), groups, L, budget)


def _checked(name: str, out: Any, groups, L: int, budget: float) -> dict[str, np.ndarray]:
    """A scheme's split, or a one-line error saying what is wrong with it."""
    if not isinstance(out, dict) or set(out) != {g.name for g in groups}:
        raise DipsimError(f"allocation {name!r} must return {{group: capacities}} for the groups "
                          f"{', '.join(g.name for g in groups)}, got {type(out).__name__}")
    res, used = {}, 0.0
    for g in groups:
        cap = np.asarray(out[g.name])
        if cap.shape != (L,) or not (np.issubdtype(cap.dtype, np.integer) or np.all(np.mod(cap, 1) == 0)):
            raise DipsimError(f"allocation {name!r}: group {g.name} needs {L} whole column counts, got "
                              f"{cap.dtype} {list(cap.shape)}")
        if (cap < 0).any() or (cap > g.n_columns).any():
            raise DipsimError(f"allocation {name!r}: group {g.name} capacities must be in 0..{g.n_columns}")
        res[g.name] = cap.astype(np.int64)
        used += float(res[g.name].sum()) * g.bytes_per_column
    if used > budget * (1 + 1e-9) + 1e-6:
        raise DipsimError(f"allocation {name!r} spends {used:.6g} B of a {budget:.6g} B budget")
    return res


@register_allocation("uniform")
@dataclass(frozen=True)
class Uniform(Allocation):
    """uniform (the DIP paper's): every layer and group caches the same fraction of its columns."""

    def split(self, groups, L, budget, calib):
        return _uniform(groups, L, budget / (sum(g.n_columns * g.bytes_per_column for g in groups) * L))


@register_allocation("benefit")
@dataclass(frozen=True)
class Benefit(Allocation):
    """benefit: greedy by measured benefit -- the budget goes, step by step, to the (group, layer) whose
    LRU hit curve on the calibration prefix gains the most hits per column added."""

    steps: int = param(64, number(1, 100_000, integer=True), "benefit: the grid of cache sizes per group and "
                                                               "layer (points of each hit curve)", metavar="N")

    needs_calibration = True

    def split(self, groups, L, budget, calib):
        return _benefit(groups, L, budget, calib, self.steps)


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
