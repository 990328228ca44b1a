"""Per-layer activation statistics of a trace (``dipsim trace-info``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .format import Trace


def _topk_stats(a: np.ndarray, frac: float) -> tuple[float, float]:
    """Mean share of |a| mass in the top ``frac`` columns, and mean overlap of consecutive tokens' top sets."""
    a = np.abs(a.astype(np.float32))
    T, N = a.shape
    k = max(1, int(round(frac * N)))
    kth = np.partition(a, N - k, axis=1)[:, N - k][:, None]
    top = a >= kth
    total = a.sum(axis=1)
    mass = np.where(total > 0, (a * top).sum(axis=1) / np.maximum(total, 1e-30), 0.0)
    overlap = (top[1:] & top[:-1]).sum(axis=1) / top[:-1].sum(axis=1) if T > 1 else np.array([np.nan])
    return float(mass.mean()), float(np.mean(overlap))


def layer_stats(trace: Trace, frac: float = 0.5, max_tokens: int = 4096) -> list[dict[str, Any]]:
    rows = []
    T = min(trace.n_tokens, max_tokens)
    for layer in range(trace.n_layers):
        x = trace.x(layer)[:T]
        row: dict[str, Any] = {"layer": layer}
        row["x_abs_mean"] = float(np.abs(x.astype(np.float32)).mean())
        row["x_top_mass"], row["x_top_overlap"] = _topk_stats(x, frac)
        if trace.has_h:
            h = trace.h(layer)[:T]
            row["h_abs_mean"] = float(np.abs(h.astype(np.float32)).mean())
            row["h_top_mass"], row["h_top_overlap"] = _topk_stats(h, frac)
        rows.append(row)
    return rows
