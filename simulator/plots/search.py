"""A search's trials on its first two objectives: every trial, the feasible ones, the Pareto front,
and optionally a finished sweep's points and front on the same axes (``dipsim optimize --compare``)."""
from __future__ import annotations

import numpy as np

from .base import context, label, plt, spans_decades
from .tradeoff import pareto_front


def search_front(df, x: str, y: str, *, maximize_x: bool, minimize_y: bool, compare=None, compare_name: str = "sweep"):
    """``df``: the trials table (``m.<metric>`` columns, ``feasible`` and ``pareto`` flags); ``x``, ``y``
    its columns of the first two objectives. ``compare``: a sweep's results table with the same
    columns. Returns ``(fig, ax)``."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6.8, 4.8))
    feas = df["feasible"].to_numpy(bool)
    ax.scatter(df[x][~feas], df[y][~feas], s=14, marker="x", color="0.6", label="trials (infeasible)")
    ax.scatter(df[x][feas], df[y][feas], s=18, color="tab:blue", alpha=0.75, label="trials (feasible)")
    front = df[df["pareto"].to_numpy(bool)].sort_values(x)
    if len(front):
        ax.plot(front[x], front[y], "o-", color="tab:red", ms=5, lw=1.2, drawstyle="default",
                label="search: Pareto front")
    if compare is not None and x in compare.columns and y in compare.columns:
        cx, cy = compare[x].to_numpy(float), compare[y].to_numpy(float)
        ok = np.isfinite(cx) & np.isfinite(cy)
        ax.scatter(cx[ok], cy[ok], s=16, marker="s", facecolors="none", edgecolors="tab:green",
                   label=f"{compare_name}: points")
        idx = pareto_front(cx[ok], cy[ok], maximize_x=maximize_x, minimize_y=minimize_y)
        ax.plot(cx[ok][idx], cy[ok][idx], "s--", color="tab:green", ms=4, lw=1, label=f"{compare_name}: Pareto front")
    ax.set_xlabel(label(x) + (" (higher is better)" if maximize_x else " (lower is better)"))
    ax.set_ylabel(label(y) + (" (lower is better)" if minimize_y else " (higher is better)"))
    if spans_decades(df[y]):
        ax.set_yscale("log")
    ax.set_title(f"search: {len(df)} trials, {int(feas.sum())} feasible\n{context(df)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax
