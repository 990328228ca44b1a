"""95% intervals of the accuracy figures, and of their differences to the dense model.

* Text metrics (perplexity, KL to dense, top-1 agreement) average per-position figures that are
  correlated along the text: the NLL of neighbouring tokens moves together (a hard passage, a code
  listing). A circular block bootstrap resamples whole blocks of ``BLOCK`` consecutive positions,
  which keeps that correlation inside each block. Why 32 (``benchmarks/intervals.py``, SmolLM2,
  1023 positions of the default corpus): the dense per-position NLL is autocorrelated by 0.07-0.10
  at lags 1-24 and by about 0 from lag 32 on (0.004 at 32, -0.03 at 48, 0.01 at 64), so blocks of 32
  hold the short-range correlation, which per-position resampling ignores (its standard error is the
  i.i.d. one; blocks of 32 give 1.61x that). The standard error keeps growing with longer blocks
  (1.88x at 64, 2.07x at 128, from only 16 and 8 blocks): a slow drift between the corpus' sections
  that 32 does not hold, so a perplexity's own interval may be some 15-25% too narrow. The paired
  difference to dense, what comparisons rest on, shows no correlation at all (|acf| <= 0.04 at every
  lag; its standard error 0.93-0.99x the i.i.d. one at every block length), so its interval does not
  depend on the block. A figure's interval is the 2.5th and 97.5th percentile over ``RESAMPLES``
  resamples (fixed seed).
* The difference to dense is bootstrapped as a difference: each resample takes the same positions
  of the configuration and of the dense model (they ran on the same tokens), so the interval of
  ``perplexity - dense_perplexity`` is that of a paired comparison, far narrower than the two
  perplexities' own intervals would suggest.
* MMLU accuracy: the Wilson score interval of ``correct / questions``; its difference to dense is a
  paired bootstrap over the questions (every row answered the same ones) with McNemar's exact test
  beside it (the p-value of the discordant pairs).

Names follow one scheme (``simulator.metrics``): ``<metric>_low`` / ``<metric>_high`` bound a
figure, ``<metric>_diff`` is its difference to the dense model (the configuration's minus dense's)
with ``<metric>_diff_low`` / ``<metric>_diff_high``.
"""
from __future__ import annotations

import math

import numpy as np

#: positions per block of the text bootstrap (see the module doc)
BLOCK = 32
#: bootstrap resamples per interval
RESAMPLES = 2000
#: two-sided level of every interval
LEVEL = 0.95
_Z = 1.959963984540054      # the normal quantile of (1 + LEVEL) / 2


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval (level ``LEVEL``) of a proportion ``k / n``."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + _Z ** 2 / n
    centre = (p + _Z ** 2 / (2 * n)) / den
    half = _Z * math.sqrt(p * (1 - p) / n + _Z ** 2 / (4 * n * n)) / den
    # at k = 0 (k = n) the lower (upper) end is exactly 0 (1); rounding would leave it a hair off
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def block_indices(n: int, block: int = BLOCK, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, n]`` position indices of a circular block bootstrap: each row joins blocks of
    ``block`` consecutive positions (wrapping at the end) from random starts, cut to ``n``."""
    block = max(1, min(int(block), n))
    n_blocks = -(-n // block)
    starts = np.random.default_rng(seed).integers(0, n, size=(resamples, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    return idx.reshape(resamples, n_blocks * block)[:, :n]


def _bounds(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def text_intervals(nll: np.ndarray, nll_dense: np.ndarray, kl: np.ndarray, top1: np.ndarray, *,
                   block: int = BLOCK, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Intervals of one configuration's text figures from its per-position ``nll``, ``kl``, ``top1``
    and the dense model's ``nll_dense`` at the same positions: ``perplexity_low/high``,
    ``kl_to_dense_low/high``, ``top1_agreement_low/high`` and the paired ``perplexity_diff`` with
    ``perplexity_diff_low/high``."""
    nll, nll_dense = np.asarray(nll, np.float64), np.asarray(nll_dense, np.float64)
    kl, top1 = np.asarray(kl, np.float64), np.asarray(top1, np.float64)
    idx = block_indices(len(nll), block, resamples, seed)
    ppl, ppl_d = np.exp(nll[idx].mean(axis=1)), np.exp(nll_dense[idx].mean(axis=1))
    out: dict[str, float] = {}
    for name, samples in (("perplexity", ppl), ("kl_to_dense", kl[idx].mean(axis=1)),
                          ("top1_agreement", top1[idx].mean(axis=1)), ("perplexity_diff", ppl - ppl_d)):
        out[f"{name}_low"], out[f"{name}_high"] = _bounds(samples)
    out["perplexity_diff"] = float(np.exp(nll.mean()) - np.exp(nll_dense.mean()))
    return out


def paired_change(a: np.ndarray, b: np.ndarray, *, exp: bool = False, block: int = BLOCK,
                  resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """The relative change of the mean of per-position figures ``a`` against ``b`` at the same
    positions (``exp``: of exp(mean), a perplexity from NLLs), ``a / b - 1``, with its interval from
    the same block resamples of both (paired)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    idx = block_indices(len(a), block, resamples, seed)
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    f = np.exp if exp else (lambda v: v)
    lo, hi = _bounds(f(ma) / f(mb) - 1)
    return float(f(a.mean()) / f(b.mean()) - 1), lo, hi


def mcnemar_exact(only_config: int, only_dense: int) -> float:
    """McNemar's exact two-sided p-value: of the discordant pairs, ``only_config`` the configuration
    answered right and dense wrong, ``only_dense`` the reverse (a binomial test of p = 1/2)."""
    n = only_config + only_dense
    if n == 0:
        return 1.0
    k = min(only_config, only_dense)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def accuracy_figures(correct: np.ndarray, correct_dense: np.ndarray | None, *, resamples: int = 10_000,
                     seed: int = 0) -> dict[str, float]:
    """MMLU figures of one row from its per-question ``correct`` flags: ``mmlu_accuracy`` with its
    Wilson interval and ``mmlu_questions``; with the dense row's flags on the same questions also the
    paired ``mmlu_accuracy_diff`` (bootstrap interval over questions) and McNemar's ``mmlu_mcnemar_p``."""
    c = np.asarray(correct, bool)
    n, k = int(c.size), int(c.sum())
    lo, hi = wilson(k, n)
    out: dict[str, float] = {"mmlu_accuracy": k / n if n else 0.0, "mmlu_accuracy_low": lo, "mmlu_accuracy_high": hi,
                             "mmlu_questions": n}
    if correct_dense is None:
        return out
    d = np.asarray(correct_dense, bool)
    gain, loss = int((c & ~d).sum()), int((d & ~c).sum())
    # a resample of the n questions draws each kind of pair (gained, lost, same) a multinomial number of times
    draws = np.random.default_rng(seed).multinomial(n, [gain / n, loss / n, 1 - (gain + loss) / n], size=resamples)
    out["mmlu_accuracy_diff"] = (gain - loss) / n
    out["mmlu_accuracy_diff_low"], out["mmlu_accuracy_diff_high"] = _bounds((draws[:, 0] - draws[:, 1]) / n)
    out["mmlu_mcnemar_p"] = mcnemar_exact(gain, loss)
    return out


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """The sample autocorrelation of ``x`` at lags ``0..max_lag`` (the measurement behind ``BLOCK``)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    v = float((x * x).mean())
    if v == 0:
        return np.zeros(max_lag + 1)
    return np.array([1.0] + [float((x[:-k] * x[k:]).mean()) / v for k in range(1, max_lag + 1)])


def significant(low: float | None, high: float | None) -> bool | None:
    """Whether an interval of a difference excludes 0 (None when there is none)."""
    if low is None or high is None:
        return None
    return not (low <= 0.0 <= high)
