"""Statistics of a trace that decide what a DRAM column cache sees, per layer and group.

Groups are ``x`` (the MLP input: its columns are W_up/W_gate's, d_model of them) and ``h`` (the
GLU output: W_down's columns, d_ff of them). Everything is measured on magnitudes, since every
policy ranks columns by |a|, and in log space, since dip-ca compares |a| of a cached column with
gamma x |a| of an uncached one: what matters is ratios.

Per layer and group (:func:`layer_stats`), for the generative model (``model.py``):

* ``mu`` -- each column's median log|a| (its importance; the heavy tail is the spread of ``mu``
  across columns), as quantiles at fixed normal-score levels, centred on the layer's median;
* ``lsig`` -- each column's spread (interquartile range of log|a| over tokens), as the mean and
  standard deviation of log IQR within bins of the column's ``mu`` rank (hot columns are steadier);
* ``shape`` -- the per-token distribution around a column's median, standardized by its IQR and
  pooled over the layer's columns: standardized log|a| at fixed normal-score levels;
* ``acf`` -- temporal persistence: the autocorrelation at lags 1..64 of each column's normal
  scores (the Gaussianized ranks of |a| over time), averaged over columns.

For comparing traces (``validate.py``, tests): :func:`topk_masks`, :func:`overlap`
(top-k overlap at a lag: the hit rate of a cache holding exactly the previous sets),
:func:`run_lengths` (how long a column stays in the top-k) and :func:`membership`
(how often each column is in the top-k: static concentration).

What is *not* measured, and why: co-activation between columns. Replaying real traces whose
columns were each shifted in time by an independent random offset (each column's own process
intact, every cross-column dependence destroyed) moved LRU hit rates by at most 0.0008 at keep 0.5
(NOTES.md), so the model treats columns as independent.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from ..format import Trace

#: normal-score levels at which quantile functions are stored (u = Phi(level))
Z_LEVELS = np.round(np.linspace(-3.0, 3.0, 25), 4)
#: bins of column rank (by mu) for the spread curve
N_SIG_BINS = 16
#: lags 1..MAX_LAG of the autocorrelation
MAX_LAG = 64
_ND = NormalDist()


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return np.array([_ND.cdf(float(v)) for v in np.ravel(z)]).reshape(np.shape(z))


def normal_scores(n: int) -> np.ndarray:
    """Expected-rank normal scores Phi^-1((i + 0.5) / n), i = 0..n-1 (float32)."""
    return np.array([_ND.inv_cdf((i + 0.5) / n) for i in range(n)], dtype=np.float32)


def gaussianize(a: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per column of ``a [T, N]``: each value replaced by the normal score of its rank over time.

    Ties (float16 repeats values; some columns are constant zeros) are broken at random, not by
    position: breaking them by time order would make tied neighbours look correlated.
    """
    T, N = a.shape
    rng = np.random.default_rng(seed)
    jitter = 1.0 + 1e-4 * rng.random((T, N), dtype=np.float32)  # below float16's relative spacing
    keyed = a.astype(np.float32) * jitter + 1e-30 * rng.random((T, N), dtype=np.float32)
    ranks = np.argsort(np.argsort(keyed, axis=0), axis=0)
    return normal_scores(T)[ranks]


def acf(z: np.ndarray, max_lag: int = MAX_LAG, chunk: int = 2048) -> np.ndarray:
    """Autocorrelation of each column of ``z [T, N]`` at lags 0..max_lag, averaged over columns.

    Unbiased per lag (divided by T - lag); columns are standardized first; FFT, columns in chunks.
    Lags a trace is too short for (>= T) are 0: no persistence is claimed that was not seen.
    """
    T, N = z.shape
    n_lags = min(max_lag, T - 1)
    total = np.zeros(n_lags + 1)
    used = 0
    for c0 in range(0, N, chunk):
        block = z[:, c0:c0 + chunk].astype(np.float64)
        block = block - block.mean(axis=0)
        sd = block.std(axis=0)
        block = block[:, sd > 0] / sd[sd > 0]   # constant columns have no autocorrelation to speak of
        used += block.shape[1]
        f = np.fft.rfft(block, n=2 * T, axis=0)
        total += np.fft.irfft(f * np.conj(f), axis=0)[: n_lags + 1].sum(axis=1)
    out = np.zeros(max_lag + 1)
    out[: n_lags + 1] = total / (T - np.arange(n_lags + 1)) / max(used, 1)
    return out


def column_logs(a: np.ndarray) -> np.ndarray:
    """log|a| per column, sorted over tokens ``[T, N]``; zeros floored at 1e-6 x the layer's median
    magnitude (a trace's constant-zero columns then sit at the bottom of the importance scale)."""
    mags = np.abs(a.astype(np.float32))
    floor = max(float(np.median(mags)), 1e-30) * 1e-6
    return np.log(np.sort(mags, axis=0) + floor)


def _at(sorted_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Quantiles at probabilities ``u`` of columns already sorted along axis 0 (linear)."""
    T = sorted_rows.shape[0]
    pos = np.clip(u * T - 0.5, 0, T - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, T - 1)
    w = (pos - lo)[:, None] if sorted_rows.ndim == 2 else pos - lo
    return sorted_rows[lo] * (1 - w) + sorted_rows[hi] * w


def marginal_stats(a: np.ndarray) -> dict[str, np.ndarray]:
    """``mu`` quantiles, ``lsig`` curve (mean, sd per rank bin) and ``shape`` of one layer's ``a [T, N]``."""
    logs = column_logs(a)
    T, N = logs.shape
    u = normal_cdf(Z_LEVELS)
    q = _at(logs, np.array([0.25, 0.5, 0.75]))
    mu, sig = q[1], np.maximum(q[2] - q[0], 1e-3)
    shape = ((_at(logs, u) - mu) / sig).mean(axis=1)
    mu_sorted = np.sort(mu)
    mu_q = _at(mu_sorted, u) - float(np.median(mu))
    order = np.argsort(mu, kind="stable")
    lsig = np.log(sig[order])
    bins = np.array_split(lsig, N_SIG_BINS)
    # fewer columns than bins (tiny test layers): an empty bin takes the column at its rank position
    nearest = lsig[((np.arange(N_SIG_BINS) + 0.5) * N / N_SIG_BINS).astype(int)]
    return {"mu": mu_q, "lsig_mean": np.array([b.mean() if b.size else v for b, v in zip(bins, nearest)]),
            "lsig_sd": np.array([b.std() if b.size else 0.0 for b in bins]), "shape": shape}


def layer_stats(a: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """All model statistics of one layer and group, ``a [T, N]`` (see the module docstring)."""
    out = marginal_stats(a)
    out["acf"] = acf(gaussianize(a, seed))[1:]
    return out


def trace_stats(trace: Trace, tokens: int | None = None, progress=None) -> dict[str, list[dict[str, np.ndarray]]]:
    """:func:`layer_stats` of every layer of both groups: ``{"x": [per layer], "h": [per layer]}``."""
    T = trace.n_tokens if tokens is None else min(int(tokens), trace.n_tokens)
    kinds = ("x", "h") if trace.has_h else ("x",)
    out: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in kinds}
    for layer in range(trace.n_layers):
        for kind in kinds:
            out[kind].append(layer_stats(trace.abs_layer(kind, layer, 0, T), seed=layer))
        if progress is not None:
            progress(layer)
    return out


# ------------------------------------------------------------------- comparison statistics
def topk_masks(a: np.ndarray, keep: float) -> np.ndarray:
    """Top-k of |a| per row (k = round(keep x N), at least 1), ties to the lowest index: ``[T, N]`` bool."""
    mags = np.abs(np.asarray(a, dtype=np.float32))
    T, N = mags.shape
    k = max(1, int(round(keep * N)))
    order = np.argsort(-mags, axis=1, kind="stable")[:, :k]
    out = np.zeros((T, N), dtype=bool)
    np.put_along_axis(out, order, True, axis=1)
    return out


def overlap(masks: np.ndarray, lag: int = 1) -> float:
    """Mean share of a token's selected columns that were also selected ``lag`` tokens earlier."""
    if masks.shape[0] <= lag:
        return float("nan")
    both = np.count_nonzero(masks[lag:] & masks[:-lag], axis=1)
    sel = np.count_nonzero(masks[lag:], axis=1)
    return float(np.mean(both / np.maximum(sel, 1)))


def run_lengths(masks: np.ndarray) -> np.ndarray:
    """Lengths of every maximal run of consecutive tokens a column spends selected (all columns)."""
    m = np.asarray(masks, dtype=np.int8)
    pad = np.zeros((1, m.shape[1]), dtype=np.int8)
    d = np.diff(np.vstack([pad, m, pad]), axis=0).T   # column-major: runs of one column are adjacent
    starts = np.flatnonzero(d.ravel() == 1)
    ends = np.flatnonzero(d.ravel() == -1)
    return ends - starts


def membership(masks: np.ndarray) -> np.ndarray:
    """Share of tokens each column is selected in ``[N]`` (its static 'hotness')."""
    return np.asarray(masks).mean(axis=0)


def compare_stats(a: np.ndarray, keep: float = 0.5) -> dict[str, float]:
    """Cache-relevant figures of one layer's ``a [T, N]`` at ``keep`` (for real-vs-synthetic tables)."""
    m = topk_masks(a, keep)
    p = membership(m)
    k = max(1, int(round(keep * a.shape[1])))
    return {"overlap_1": overlap(m, 1), "overlap_8": overlap(m, 8), "overlap_64": overlap(m, 64),
            "static_overlap": float((p * p).sum() / k), "mean_run": float(run_lengths(m).mean())}
