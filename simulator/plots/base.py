"""What every plot shares: column checks, labels with units, the run's context for a title, one
legend for a figure, and when an axis is logarithmic (only where the data spans decades)."""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from common.errors import DipsimError


def plt():
    # The backend is the caller's: inline in a notebook, Agg on a headless machine (matplotlib's
    # own fallback), whatever MPLBACKEND says otherwise.
    import matplotlib.pyplot as pyplot

    return pyplot


def need(df, cols: Sequence[str], kind: str = "this plot") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DipsimError(f"{kind} needs the column {missing[0]!r}, which these results do not have "
                          f"(columns: {', '.join(c for c in df.columns if c.startswith(('p.', 'm.')))})")


def varies(df, col: str) -> bool:
    """Whether the results hold more than one value of ``col`` (False when they lack the column)."""
    return col in df.columns and df[col].astype(str).nunique() > 1


def first_varying(df, candidates: Sequence[str], skip: str | None = None) -> str | None:
    """The first of ``candidates`` (other than ``skip``) that varies: what to tell lines or points apart by."""
    return next((c for c in candidates if c != skip and varies(df, c)), None)


def need_varying(df, col: str, kind: str) -> None:
    """Refuse a plot against ``col`` when the results hold one value of it (a vertical line)."""
    if col not in df.columns:
        name = col.split(".", 1)[1]
        raise DipsimError(f"{kind} plots against {name}, which these results do not sweep; sweep it (grid: "
                          f"{{{name}: [...]}}) or choose another --kind")
    if not varies(df, col):
        raise DipsimError(f"{kind} plots against {col.split('.', 1)[1]}, but every result has the same value "
                          f"({df[col].iloc[0]}); sweep it (grid: {{{col.split('.', 1)[1]}: [...]}}) or choose "
                          f"another --kind")


#: (label, scale) of the columns plots show: values are divided by the scale
UNITS = {
    "m.hit_rate": ("hit rate (by bytes)", 1.0),
    "m.closed_loop_hit_rate": ("hit rate, closed loop (by bytes)", 1.0),
    "m.flash_bytes_per_token": ("flash reads (MB per token)", 1e6),
    "m.flash_read_bytes_per_token": ("flash reads incl. page rounding (MB per token)", 1e6),
    "m.dram_bytes_per_token": ("DRAM reads of cached columns (MB per token)", 1e6),
    "m.tokens_per_s": ("tokens/s (device model)", 1.0),
    "m.analytic_tokens_per_s": ("tokens/s (the paper's bytes/bandwidth model)", 1.0),
    "m.dense_tokens_per_s": ("tokens/s of the dense model on the same DRAM", 1.0),
    "m.speedup_vs_dense": ("speed-up over dense, same DRAM (x)", 1.0),
    "m.speedup_vs_dense_stream": ("speed-up over streaming the whole dense MLP from flash (x)", 1.0),
    "m.latency_ms_p99": ("p99 latency (ms per token)", 1.0),
    "m.perplexity": ("perplexity", 1.0),
    "m.kl_to_dense": ("KL to dense (nats)", 1.0),
    "m.top1_agreement": ("top-1 agreement with dense", 1.0),
    "p.gamma": ("γ (DIP-CA's factor for uncached columns)", 1.0),
    "p.keep": ("keep (fraction of columns per token)", 1.0),
    "p.dram_fraction": ("DRAM cache (fraction of the MLP weights)", 1.0),
}


def label(c: str) -> str:
    return UNITS.get(c, (c.split(".", 1)[-1].replace("_", " "), 1.0))[0]


def values(df, c: str, like: str | None = None) -> np.ndarray:
    """Column ``c`` in the unit plots show it in (that of column ``like``, for its bounds)."""
    return df[c].to_numpy(dtype=float) / UNITS.get(like or c, ("", 1.0))[1]


#: shares of a whole: always on a linear axis from 0 to 1
FRACTIONS = ("m.hit_rate", "m.closed_loop_hit_rate", "m.top1_agreement", "m.column_hit_rate", "m.keep")


def spans_decades(v) -> bool:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() > 20


def wants_log(col: str, v) -> bool:
    """A log axis for ``col``: only where its values span decades, none is zero or negative (a line
    reaching 0 would vanish), and it is not a share of a whole."""
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return col not in FRACTIONS and v.size > 1 and bool((v > 0).all()) and spans_decades(v)


def plain_log_ticks(ax, which: str = "y") -> None:
    """Log-axis ticks as plain numbers at 1, 2, 5 x 10^n (20, 50, 100 rather than 2x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def context(df, skip: Sequence[str] = ()) -> str:
    """What every row shares, for a title: model, device, keep, cache and budget, tokens."""
    def one(col):
        if col in skip or col not in df.columns:
            return None
        vals = df[col].dropna().astype(str).unique()
        return vals[0] if len(vals) == 1 else None

    model = one("p.trace")
    parts = []
    if model is not None:
        parts.append(trace_name(model))
    for col, fmt in (("p.device", "{}"), ("p.masking", "{}"), ("p.keep", "keep {}"), ("p.gamma", "γ {}"),
                     ("p.cache", "{} cache"), ("p.dram_fraction", "{} of the MLP in DRAM")):
        v = one(col)
        if v is not None:
            parts.append(fmt.format(v))
    return ", ".join(parts)


def dense_note(df) -> str:
    """What a title says when the dense baseline's DRAM holds the whole MLP (``m.dense_mlp_in_dram``):
    its speed-ups then compare with a model that never reads flash. Empty otherwise."""
    if "m.dense_mlp_in_dram" not in df.columns:
        return ""
    held = df["m.dense_mlp_in_dram"].dropna().astype(bool)
    if not held.any():
        return ""
    where = "" if held.all() else f" in {int(held.sum())} of {len(held)} rows"
    return f"; the dense model's DRAM holds its whole MLP{where} (it never reads flash)"


def fit_title(text: str, fig, fontsize: float = 10, share: float = 1.0) -> str:
    """``text`` wrapped to the figure's width (``share`` of it), so that a long title is never cut."""
    import textwrap

    chars = max(20, int(share * fig.get_figwidth() * 72 / (0.58 * fontsize)))
    return textwrap.fill(text, chars)


def trace_name(trace: str) -> str:
    """A trace for a title: ``model, N tokens`` for a captured {model, tokens} trace (which results hold
    as JSON), else the file's stem."""
    if trace.startswith("{"):
        try:
            spec = json.loads(trace)
            return f"{spec['model']}, {spec['tokens']} tokens" if "tokens" in spec else str(spec["model"])
        except (ValueError, KeyError, TypeError):
            return trace
    return trace.rsplit("/", 1)[-1].split(".safetensors")[0]


def shared_legend(fig, axes) -> None:
    """One legend for the whole figure, below the panels (the same lines in every panel)."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        for h, t in zip(*ax.get_legend_handles_labels()):
            if t not in labels:
                handles.append(h)
                labels.append(t)
    if handles:   # as many columns as the figure's width holds at the longest label, at most 4
        avail = fig.get_figwidth() * 72 / (0.55 * 8)
        ncol = int(max(1, min(4, len(labels), avail // (max(map(len, labels)) + 8))))
        rows = -(-len(labels) // ncol)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, min(0.4, (0.2 + 0.17 * rows) / fig.get_figheight()), 1, 1))
