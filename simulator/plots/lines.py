"""Metrics against a swept parameter (gamma, keep, DRAM budget), and a bar per device."""
from __future__ import annotations

from typing import Sequence

import numpy as np


from .base import (context, dense_note, first_varying, fit_title, label, need, need_varying, plain_log_ticks, plt,
                   shared_legend, values, wants_log)

SPEED = ("m.hit_rate", "m.flash_bytes_per_token", "m.tokens_per_s", "m.speedup_vs_dense")
#: what a metric's band means when it is not a synthetic trace's validation error
BAND = {f"m.{k}": "95% interval" for k in ("perplexity", "kl_to_dense", "top1_agreement", "mmlu_accuracy")}


def lines(df, x: str, ys: Sequence[str], by: str | None = None, *, title: str = ""):
    """One panel per metric in ``ys``, x against metric, one line per value of ``by``; one legend. A
    metric with ``<name>_low`` / ``<name>_high`` columns (a synthetic trace's validation error, an
    accuracy figure's 95% interval) gets a band between them."""
    need(df, [x, *ys] + ([by] if by else []))
    fig, axes = plt().subplots(1, len(ys), figsize=(4.6 * len(ys), 3.9), squeeze=False)
    groups = [(None, df)] if by is None else list(df.groupby(by, dropna=False, sort=True))
    for ax, y in zip(axes[0], ys):
        same = by is not None and _same_curves(groups, x, y)
        for n, (val, sub) in enumerate(groups):
            sub = sub.sort_values(x)
            if same and n:      # every group draws the same curve: one line, said so, hides none
                continue
            name = None if by is None else (f"every {label(by).split(' (')[0]} (the same values)" if same else
                                            f"{label(by).split(' (')[0]} = {val}")
            (line,) = ax.plot(values(sub, x), values(sub, y), marker="o", ms=3, label=name,
                              **({"color": "0.3", "ls": "--"} if same else {}))
            if f"{y}_low" in sub.columns and sub[f"{y}_low"].notna().any():
                ax.fill_between(values(sub, x), values(sub, f"{y}_low", like=y), values(sub, f"{y}_high", like=y),
                                color=line.get_color(), alpha=0.18, lw=0,
                                label=BAND.get(y, "validation error of the trace model"))
        if y == "m.speedup_vs_dense":
            ax.axhline(1.0, ls=":", color="grey", lw=1, label="the dense model on the same DRAM (1x)")
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(y))
        if wants_log(y, values(df, y)):
            ax.set_yscale("log")
            plain_log_ticks(ax)
        ax.grid(alpha=0.3)
    if "m.speedup_vs_dense" in ys:
        title += dense_note(df)
    fig.suptitle(fit_title(title, fig), fontsize=10)
    fig.tight_layout()
    shared_legend(fig, axes[0])
    return fig, axes[0]


def _same_curves(groups, x: str, y: str) -> bool:
    """Whether every group has the same (x, y) points (a metric the grouping does not change)."""
    curves = [sub.sort_values(x) for _, sub in groups]
    first = curves[0]
    for c in curves[1:]:
        if len(c) != len(first) or not np.array_equal(values(c, x), values(first, x)):
            return False
        a, b = values(c, y), values(first, y)
        if not np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True):
            return False
    return len(curves) > 1


def vs_gamma(df, by: str | None = None):
    """Hit rate, flash MB and (when present) tokens/s and the speed-up over the dense model on the same
    DRAM against γ, one line per DRAM budget (or the other swept parameter)."""
    need_varying(df, "p.gamma", "--kind gamma")
    by = by or first_varying(df, ("p.dram_fraction", "p.keep", "p.device", "p.cache"), "p.gamma")
    ys = [c for c in SPEED if c in df.columns]
    return lines(df, "p.gamma", ys, by, title=f"DIP-CA's γ trade-off -- {context(df, skip=('p.gamma',))}")


def vs_keep(df, by: str | None = None):
    """Hit rate, flash MB and (when present) tokens/s and the speed-up over the dense model on the same
    DRAM against keep, one line per masking policy."""
    need_varying(df, "p.keep", "--kind keep")
    by = by or first_varying(df, ("p.masking", "p.dram_fraction", "p.device"), "p.keep")
    ys = [c for c in SPEED if c in df.columns]
    return lines(df, "p.keep", ys, by, title=f"Sparsity trade-off -- {context(df, skip=('p.keep',))}")


def vs_budget(df, by: str | None = None):
    need_varying(df, "p.dram_fraction", "--kind auto")
    by = by or first_varying(df, ("p.masking", "p.cache", "p.keep"), "p.dram_fraction")
    ys = [c for c in ("m.hit_rate", "m.tokens_per_s", "m.speedup_vs_dense") if c in df.columns]
    return lines(df, "p.dram_fraction", ys, by, title=f"DRAM budget -- {context(df, skip=('p.dram_fraction',))}")


def per_device(df, metric: str = "m.tokens_per_s", by: str | None = None):
    """A bar per device (grouped by ``by``), with the paper's analytic model as a marker. Bars on a
    linear axis: a bar's length is its value."""
    need_varying(df, "p.device", "--kind device")
    need(df, [metric], "--kind device")
    by = by or first_varying(df, ("p.masking", "p.gamma", "p.keep"), "p.device")
    devices = list(dict.fromkeys(df["p.device"]))
    cats = [None] if by is None else list(dict.fromkeys(df[by]))
    fig, ax = plt().subplots(figsize=(min(12, max(6, 0.9 * len(devices) * max(len(cats), 1))), 4.6))
    width = 0.8 / len(cats)
    x = np.arange(len(devices))
    for i, c in enumerate(cats):
        sub = df if c is None else df[df[by] == c]
        vals = [values(sub[sub["p.device"] == d], metric).mean() for d in devices]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width,
               label=None if c is None else f"{label(by).split(' (')[0]} = {c}")
        if metric == "m.tokens_per_s" and "m.analytic_tokens_per_s" in sub.columns:
            an = [sub[sub["p.device"] == d]["m.analytic_tokens_per_s"].mean() for d in devices]
            ax.scatter(x + i * width - 0.4 + width / 2, an, marker="_", s=300, color="k",
                       label="the paper's bytes/bandwidth model" if i == 0 else None, zorder=3)
    if metric == "m.speedup_vs_dense":
        ax.axhline(1.0, ls=":", color="grey", lw=1, label="the dense model on the same DRAM (1x)")
    ax.set_xticks(x)
    ax.set_xticklabels([str(d) for d in devices], rotation=20, ha="right")
    ax.set_ylabel(label(metric))
    ax.grid(alpha=0.3, axis="y")
    note = dense_note(df) if metric == "m.speedup_vs_dense" else ""
    ax.set_title(fit_title(f"By device -- {context(df, skip=('p.device',))}{note}", fig), fontsize=10)
    fig.tight_layout()
    shared_legend(fig, [ax])        # below the axes: inside, it can cover a bar or a marker
    return fig, ax
