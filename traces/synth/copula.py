"""The folded Gaussian copula: how a column's rank moves from token to token.

Real traces are persistent in their *upper* tail only: a column far above its median at one token
stays high at the next far more often than a Gaussian copula allows (P(next > q | now > q) at the
99.4% quantile: 0.05-0.14 in the real traces, 0.02 for a Gaussian copula of the same lag-1
autocorrelation), while small values are as good as independent from token to token (0.005-0.012
against a marginal 0.006). That is what the magnitude of a persistent *signed* process does: |y|
is large while y stays far from zero, and small values come from zero crossings, which do not
persist. So the generator runs a signed Gaussian process y (standard normal marginal, fitted
autocorrelation) and ranks each column by |y|:

    z = Phi^-1(2 Phi(|y|) - 1)          (standard normal again)
    log|a| = mu + sig * shape(z)

The measured autocorrelation is that of z (normal scores of |a|); :func:`unfold_acf` turns it into
the autocorrelation y needs, through ``corr(z1, z2) = fold_corr(corr(y1, y2))`` computed once by
Gauss-Hermite quadrature.
"""
from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist

import numpy as np

_ND = NormalDist()
#: grid of the generation table in sqrt|y| (fine where the fold is steep, near |y| = 0): 1/128 apart
#: up to |y| = 8 (beyond: linear, probability 1e-15)
FOLD_STEP = 1.0 / 128
FOLD_GRID = np.arange(0, np.sqrt(8.0) + FOLD_STEP / 2, FOLD_STEP)


def fold_z(y_abs: np.ndarray) -> np.ndarray:
    """Phi^-1(2 Phi(|y|) - 1): the standard normal with the ranks of |y|."""
    out = []
    for v in np.ravel(np.abs(y_abs)):
        u = 2.0 * _ND.cdf(float(v)) - 1.0
        out.append(_ND.inv_cdf(min(max(u, 1e-300), 1 - 1e-16)))
    return np.array(out).reshape(np.shape(y_abs))


def fold_knots(z_levels: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The shape table re-indexed by sqrt|y| on :data:`FOLD_GRID` (float32), for the generation loop.

    |y| = 0 maps to z = -inf; its knot takes the value half a step up instead (z = -4.2), so only
    the lowest 0.002% of a column's values are drawn compressed.
    """
    z = _fold_table()[1]
    slope_lo = (shape[1] - shape[0]) / (z_levels[1] - z_levels[0])
    slope_hi = (shape[-1] - shape[-2]) / (z_levels[-1] - z_levels[-2])
    y = np.interp(z, z_levels, shape)
    y = np.where(z < z_levels[0], shape[0] + (z - z_levels[0]) * slope_lo, y)
    y = np.where(z > z_levels[-1], shape[-1] + (z - z_levels[-1]) * slope_hi, y)
    return y.astype(np.float32)


@lru_cache(maxsize=1)
def _fold_table() -> tuple[np.ndarray, np.ndarray]:
    """(FOLD_GRID, z at each point; the first at half a step)."""
    grid = FOLD_GRID.copy()
    grid[0] = FOLD_STEP / 2
    return FOLD_GRID, fold_z(grid * grid)


@lru_cache(maxsize=1)
def _corr_table() -> tuple[np.ndarray, np.ndarray]:
    """fold_corr on a grid of rho in [0, 1], from the Hermite expansion of g(y) = fold_z(y):
    corr(g(y1), g(y2)) = sum_k a_k rho^k with a_k = E[g h_k]^2 / Var g (h_k the orthonormal
    Hermite polynomials; odd terms vanish, g being even). 1-D integrals on a fine grid: g has a
    log singularity at 0 that 2-D Gauss-Hermite quadrature gets wrong by up to 0.09 near rho = 1."""
    y = np.geomspace(1e-9, 12, 12000)                 # g is even: integrate over y > 0 and double;
    dy = np.gradient(y)                               # log-spaced points follow the singularity at 0
    g = fold_z(y)
    w = 2 * dy * np.exp(-0.5 * y * y) / np.sqrt(2 * np.pi)
    mean = float(w @ g)
    var = float(w @ (g - mean) ** 2)
    a = []
    h_prev, h = np.zeros_like(y), np.ones_like(y)
    for k in range(1, 400):                           # h_k by the stable normalized recurrence
        h_prev, h = h, (y * h - np.sqrt(k - 1) * h_prev) / np.sqrt(k)
        a.append((w @ (g * h)) ** 2 / var if k % 2 == 0 else 0.0)
    a = np.array(a)
    rhos = np.linspace(0, 1, 401)
    corr = (rhos[:, None] ** np.arange(1, 400)[None, :]) @ a
    corr[-1] = 1.0                                    # the truncated tail of the series (~1%) sits at rho -> 1
    return rhos, np.maximum.accumulate(corr)


def fold_corr(rho: np.ndarray) -> np.ndarray:
    """Autocorrelation of z produced by autocorrelation ``rho`` of y (negative rho: as |rho|)."""
    rhos, corr = _corr_table()
    return np.interp(np.abs(rho), rhos, corr)


def unfold_acf(acf_z: np.ndarray) -> np.ndarray:
    """The autocorrelation y needs for z to have ``acf_z`` (negative or zero values: 0)."""
    rhos, corr = _corr_table()
    return np.interp(np.clip(acf_z, 0, 1), corr, rhos)
