"""A search's trials on its first two objectives: every trial, the feasible ones, the Pareto front,
and optionally a finished sweep's points and front on the same axes (``dipsim optimize --compare``);
and several searches' fronts side by side, one per method (``search.each``: fronts.png)."""
from __future__ import annotations

import numpy as np

from .base import context, label, plt, shared_legend, spans_decades
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


def method_fronts(df, x: str, y: str, *, front_key: str, panel_keys: list[str], maximize_x: bool, minimize_y: bool,
                  limit: tuple[str, float, str] | None = None):
    """Several searches' fronts on the same axes: one panel per value of ``panel_keys`` (the last key the
    columns, the others the rows), one Pareto front per value of ``front_key`` in each (its ``pareto``
    trials joined; a front of one point is a star), the feasible trials faint behind. ``df``: the
    studies' trials tables together (``dipsim optimize`` with ``search.each``: fronts.parquet).
    ``limit``: (column, factor, label): a dashed line at the panel's median of the column times the
    factor (the perplexity budget: dense_perplexity x (1 + max_perplexity_increase))."""
    pyplot = plt()
    cols = list(dict.fromkeys(df[panel_keys[-1]])) if panel_keys else [None]
    rows = list(dict.fromkeys(map(tuple, df[panel_keys[:-1]].to_numpy()))) if len(panel_keys) > 1 else [()]
    fig, axes = pyplot.subplots(len(rows), len(cols), figsize=(4.8 * len(cols), 3.7 * len(rows) + 0.6),
                                squeeze=False)
    methods = list(dict.fromkeys(df[front_key]))
    colors = {m: pyplot.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for (i, r), (j, c) in ((a, b) for a in enumerate(rows) for b in enumerate(cols)):
        ax, sel = axes[i][j], np.ones(len(df), bool)
        for k, v in zip(panel_keys, (*r, c) if panel_keys else ()):
            sel &= (df[k] == v).to_numpy()
        sub = df[sel]
        for m in methods:
            t = sub[sub[front_key] == m]
            feas = t[t["feasible"].to_numpy(bool)]
            ax.scatter(feas[x], feas[y], s=9, color=colors[m], alpha=0.25, linewidths=0)
            front = t[t["pareto"].to_numpy(bool)].sort_values(x)
            if len(front) == 1:
                ax.plot(front[x], front[y], "*", color=colors[m], ms=11, label=m)
            elif len(front):
                ax.plot(front[x], front[y], "o-", color=colors[m], ms=4, lw=1.3, label=m)
        if limit is not None and limit[0] in sub.columns and sub[limit[0]].notna().any():
            ax.axhline(float(sub[limit[0]].median()) * limit[1], ls="--", lw=0.8, color="0.45", label=limit[2])
        n_feas = int(sub["feasible"].sum())
        where = ", ".join(str(v) for v in (*r, c) if v is not None)
        ax.set_title(f"{where}\n{len(sub)} trials, {n_feas} feasible", fontsize=9)
        ax.set_xlabel(label(x) + (" (higher is better)" if maximize_x else " (lower is better)"), fontsize=8)
        ax.set_ylabel(label(y) + (" (lower is better)" if minimize_y else " (higher is better)"), fontsize=8)
        if spans_decades(sub[y][sub["feasible"].to_numpy(bool)]):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    shared_legend(fig, axes)
    return fig
