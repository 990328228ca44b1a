"""Accuracy against speed: the Pareto front of the configurations a sweep measured."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from common.errors import DipsimError

from .base import (context, dense_note, first_varying, fit_title, label, need, plain_log_ticks, plt, shared_legend,
                   spans_decades, varies)


def pareto_front(xs: np.ndarray, ys: np.ndarray, *, maximize_x: bool = True, minimize_y: bool = True) -> np.ndarray:
    """Indices of the non-dominated points (best x for any y), sorted by x."""
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    sx = xs if maximize_x else -xs
    sy = -ys if minimize_y else ys
    order = np.lexsort((-sy, -sx))  # best x first, then best y
    front, best = [], -np.inf
    for i in order:
        if sy[i] > best:
            front.append(i)
            best = sy[i]
    return np.array(sorted(front, key=lambda i: xs[i]), dtype=int)


HIGHER_IS_BETTER = ("p.keep", "p.gamma", "m.top1_agreement")  # closer to dense = more accurate


def pareto(df, x: str = "m.tokens_per_s", y: str | None = None, by: str | None = None, *, annotate: str | None = None,
           minimize: bool | None = None):
    """Tokens/s against accuracy (``m.perplexity`` when present, else keep), with the Pareto front.

    ``minimize``: whether lower ``y`` is better; by default lower is better except for keep, gamma
    and top-1 agreement, where higher means closer to the dense model."""
    pyplot = plt()
    if y is None:
        y = "m.perplexity" if "m.perplexity" in df.columns else "p.keep"
    need(df, [x, y])
    if minimize is None:
        minimize = y not in HIGHER_IS_BETTER
    fig, ax = pyplot.subplots(figsize=(6.4, 4.6))
    if by is None:   # fronts of different devices (or caches, budgets) are not one front
        by = first_varying(df, ("p.device", "p.cache", "p.dram_fraction", "p.masking"))
    groups = [(None, df)] if by is None or by not in df.columns else list(df.groupby(by, sort=True))
    for n, (val, sub) in enumerate(groups):
        name = "" if val is None else f"{label(by).split(' (')[0]} = {val}: "
        pts = ax.scatter(sub[x], sub[y], s=18, alpha=0.7, label=f"{name}configurations")
        idx = pareto_front(sub[x].to_numpy(), sub[y].to_numpy(), minimize_y=minimize)
        ax.plot(sub[x].to_numpy()[idx], sub[y].to_numpy()[idx], lw=1, color=pts.get_facecolor()[0][:3],
                label=f"{name}Pareto front")
        if annotate and annotate in sub.columns:
            for i in idx:
                ax.annotate(str(sub[annotate].iloc[i]), (sub[x].iloc[i], sub[y].iloc[i]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y) + (" (lower is better)" if minimize else " (higher is better)"))
    if spans_decades(df[x]):
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(fit_title(f"Speed against {label(y).split(' (')[0]} -- {context(df)}", fig), fontsize=10)
    fig.tight_layout()
    shared_legend(fig, [ax])
    return fig, ax


#: columns that, when they vary across the plotted rows, a point's label names (short form)
LABEL_EXTRAS = {"p.dram_fraction": "{:g} DRAM", "p.cache": "{}", "p.device": "{}", "p.weight_format": "{}"}


def varying(d) -> list[str]:
    """The ``LABEL_EXTRAS`` columns that take more than one value in ``d``."""
    return [c for c in LABEL_EXTRAS if varies(d, c)]


def point_label(row, extras: Sequence[str] = ()) -> str:
    """A point's policy in a few characters: ``dense``, ``dip 0.5``, ``dip-ca γ0.2``, ``dip-ca γ0.2 k0.75``,
    followed by the ``extras`` columns that tell apart points of the same policy (``0.5 DRAM``)."""
    m = str(row.get("p.masking", "dip"))
    keep = row.get("p.keep")
    if m == "dense":
        text = "dense"
    elif m == "dip-ca":
        text = f"dip-ca γ{row.get('p.gamma', 0.2):g}"
        text = text if keep in (None, 0.5) or _isnan(keep) else f"{text} k{keep:g}"
    else:
        text = m if keep is None or _isnan(keep) else f"{m} {keep:g}"
    more = [LABEL_EXTRAS[c].format(row[c]) for c in extras if row.get(c) is not None and not _isnan(row.get(c))]
    return ", ".join([text, *more])


def _isnan(v) -> bool:
    return isinstance(v, float) and v != v


def accuracy_vs_speed(df, xs: Sequence[str] = ("m.tokens_per_s", "m.analytic_tokens_per_s"),
                      y: str = "m.perplexity", *, collapse: float = 10.0, title: str | None = None):
    """The trade-off the tool exists for: accuracy (``y``, lower is better) against speed, one panel
    per speed column in ``xs`` that the results hold (by default the device model's tokens/s and,
    beside it, the DIP paper's bytes/bandwidth model on the same access logs).

    Every point is labelled with its policy (``point_label``); the Pareto front (fastest for any
    accuracy) is drawn over the points that have not collapsed. A point whose perplexity exceeds
    ``collapse`` x the dense model's is a collapsed model: it is drawn at the top edge with an arrow
    and its value, visible as such without squashing the rest of the plot. When every row shares
    one dense baseline (``m.dense_tokens_per_s``), the device model's panel reads its speed-up over
    that dense model on a second axis at the top (``speedup_vs_dense``).
    """
    pyplot = plt()
    xs = [x for x in xs if x in df.columns]
    if not xs:
        raise DipsimError("the results have no tokens/s column; give the sweep a device")
    need(df, [y])
    d = df.dropna(subset=[xs[0], y]).reset_index(drop=True)
    if d.empty:
        raise DipsimError(f"no row has both {xs[0]} and {y}")
    fig, axes = pyplot.subplots(1, len(xs), figsize=(6.4 * len(xs), 5.0), sharey=True, squeeze=False)
    for i, (ax, x) in enumerate(zip(axes[0], xs)):
        _tradeoff_panel(ax, d, x, y, collapse, legend=i == len(xs) - 1)
        if i:
            ax.set_ylabel("")
    fig.suptitle(title or fit_title(f"accuracy against speed -- {context(d)}{dense_note(d)}", fig), fontsize=10)
    fig.tight_layout()
    return fig, axes[0]


def _tradeoff_panel(ax, d, x: str, y: str, collapse: float, legend: bool) -> None:
    labels = [point_label(r, varying(d)) for r in d.to_dict("records")]
    ref = float(d["m.dense_perplexity"].iloc[0]) if y == "m.perplexity" and "m.dense_perplexity" in d else None
    limit = ref * collapse if ref else np.inf
    xv, yv = d[x].to_numpy(float), d[y].to_numpy(float)
    ok = yv <= limit
    ax.scatter(xv[ok], yv[ok], s=28, zorder=3, label="configuration")
    if f"{x}_low" in d.columns and d[f"{x}_low"].notna().any():   # a synthetic trace's validation error
        lo, hi = d[f"{x}_low"].to_numpy(float), d[f"{x}_high"].to_numpy(float)
        ax.errorbar(xv[ok], yv[ok], xerr=[(xv - lo)[ok], (hi - xv)[ok]], fmt="none", ecolor="C0", alpha=0.5,
                    lw=1, zorder=2, label="validation error of the trace model")
    if f"{y}_low" in d.columns and d[f"{y}_low"].notna().any():   # 95% intervals (block bootstrap)
        lo, hi = d[f"{y}_low"].to_numpy(float), d[f"{y}_high"].to_numpy(float)
        ax.errorbar(xv[ok], yv[ok], yerr=[np.nan_to_num((yv - lo)[ok]), np.nan_to_num((hi - yv)[ok])], fmt="none",
                    ecolor="0.35", alpha=0.7, lw=1, capsize=2, zorder=2, label=f"95% interval of {label(y).split(' (')[0]}")
    front = np.flatnonzero(ok)[pareto_front(xv[ok], yv[ok])] if ok.any() else np.array([], int)
    ax.plot(xv[front], yv[front], lw=1.5, color="C1", zorder=2, label="Pareto front (collapsed points left out)")
    ax.scatter(xv[front], yv[front], s=70, facecolors="none", edgecolors="C1", zorder=4)
    top = limit if not ok.all() else None
    if ref:
        ax.axhline(ref, ls=":", color="grey", lw=1, label=f"dense model ({ref:.3g})")
    if top is not None:
        ax.axhline(top, ls="--", color="C3", lw=0.8, label=f"collapse line ({collapse:g}x dense)")
        ax.scatter(xv[~ok], np.full((~ok).sum(), top), marker="^", s=50, color="C3", zorder=3)
    if spans_decades(yv[ok]) or top is not None:
        ax.set_yscale("log")
    if spans_decades(xv):
        ax.set_xscale("log")
    for which, scale in (("x", ax.get_xscale()), ("y", ax.get_yscale())):
        if scale == "log":   # plain numbers at 1, 2, 5 x 10^n rather than powers of ten
            plain_log_ticks(ax, which)
    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y) + " (lower is better)")
    ax.grid(alpha=0.3, which="both")
    if x == "m.tokens_per_s":
        speedup_axis(ax, d)
    texts = [(xv[i], yv[i] if ok[i] else top, labels[i] if ok[i] else f"{labels[i]}: collapsed ({yv[i]:.3g})",
              "k" if ok[i] else "C3") for i in range(len(labels))]
    _place_labels(ax, texts)
    if legend:
        ax.legend(fontsize=7, loc="upper left")


def speedup_axis(ax, d) -> None:
    """A second x axis at the top reading tokens/s as the speed-up over the dense model on the same
    DRAM, when the rows share one dense baseline (else the ratio differs from row to row)."""
    if "m.dense_tokens_per_s" not in d.columns:
        return
    base = d["m.dense_tokens_per_s"].dropna().unique()
    if len(base) != 1 or not base[0] > 0:
        return
    b = float(base[0])
    top = ax.secondary_xaxis("top", functions=(lambda v: v / b, lambda v: v * b))
    top.set_xlabel(label("m.speedup_vs_dense"), fontsize=8)
    if ax.get_xscale() == "log":
        plain_log_ticks(top, "x")


def _place_labels(ax, texts) -> None:
    """Annotate points so that labels do not overlap: a label goes right of its point (ending at it,
    left of it, where it would cross the right edge) and moves down, in screen space, past labels
    already placed. Widths are the rendered texts' own."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    right_edge = ax.get_window_extent().x1
    pt = 72.0 / fig.dpi      # points per display pixel now
    placed = []
    for x, y, text, color in sorted(texts, key=lambda t: -t[1]):
        px, py = ax.transData.transform((x, y))
        t = ax.annotate(text, (x, y), fontsize=7, color=color, textcoords="offset points", xytext=(5 * pt, 3 * pt))
        ext = t.get_window_extent(renderer)
        w, h = ext.width + 2, ext.height
        right = px + 5 + w < right_edge
        x0 = px + 5 if right else px - 5 - w
        oy = 3
        for _ in range(40):
            box = (x0, py + oy, x0 + w, py + oy + h)
            if not any(b[0] < box[2] and box[0] < b[2] and b[1] < box[3] and box[1] < b[3] for b in placed):
                break
            oy -= h
        placed.append(box)
        t.set_horizontalalignment("left" if right else "right")
        t.xyann = ((5 if right else -5) * pt, oy * pt)   # in points: the same place at any saving dpi


