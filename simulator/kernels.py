"""Compiled building blocks shared by the masking and cache policies (a leaf: imports only numpy/numba).

* ``topk_mask``: exact top-k per row of a matrix (numpy), ties to the lowest column index;
* ``topk_row``: the same for one row, compiled, for loops that run inside numba;
* ``select_row``: the per-token selection rules that depend on the cache (``SELECT_*`` codes), so
  that a cache's compiled loop can pick a token's columns and step the cache in one pass.

Selection rules are passed to compiled loops as an integer code plus a float64 parameter vector,
not as functions: numba cannot cache a compiled function that takes another function as an
argument, and recompiling on every start costs seconds.

Numba's on-disk cache of a function is checked against its own source file only: a compiled loop
in another module that calls these kernels (``caches/_kernels.py``, ``_requests.py``,
``s3fifo.py``, ``arc.py``) keeps the old code inlined after a change here. When changing a
kernel, touch those files too (or delete their ``__pycache__/*.nbi``/``*.nbc``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from common.jit import njit

#: selection codes for :func:`select_row`
SELECT_TOPK = 0     # top-k of the scores
SELECT_DIPCA = 1    # dip-ca: params = (gamma, fixed_top_n)
SELECT_THRESHOLD_CA = 2   # cats-ca (threshold): params = (gamma, tau); keeps s * (c + gamma (1 - c)) > tau


class LayerSelector(NamedTuple):
    """How a cache-aware policy picks one layer's masks while the cache steps through the tokens
    (``cache.run_layer_selecting``): the tokens' scores, the columns to keep, and the rule -- as a
    compiled :func:`select_row` code when the policy has one, and always as a Python function."""

    scores: np.ndarray                              # [T, N] float32 magnitudes
    k: int                                          # columns per token
    rule: tuple[int, np.ndarray] | None             # (SELECT_* code, float64 params) or None
    select: Callable[[np.ndarray, np.ndarray], np.ndarray]   # (scores [N], resident [N]) -> mask [N]


# ----------------------------------------------------------------------------------------- numpy
def topk_mask(scores: np.ndarray, k: np.ndarray, prefer: np.ndarray | None = None) -> np.ndarray:
    """Exactly ``k[l]`` largest entries of each row of ``scores [L, N]``.

    Ties at the threshold go to the lowest column index; with ``prefer`` (bool [L, N]) preferred
    columns win ties first (then lowest index).
    """
    L, N = scores.shape
    out = np.zeros((L, N), dtype=bool)
    for kv in np.unique(k):
        rows = np.flatnonzero(k == kv) if len(k) > 1 and not (k == kv).all() else None
        s = scores if rows is None else scores[rows]
        kv = int(kv)
        if kv == 0:
            m = np.zeros(s.shape, dtype=bool)
        elif kv >= N:
            m = np.ones(s.shape, dtype=bool)
        else:
            kth = np.partition(s, N - kv, axis=1)[:, N - kv: N - kv + 1]  # the kv-th largest value per row
            m = s >= kth
            counts = np.count_nonzero(m, axis=1)
            tied = np.flatnonzero(counts != kv)  # rows with several entries equal to the threshold
            if tied.size:
                _break_ties(s, m, kth, kv, tied, None if prefer is None else
                            (prefer if rows is None else prefer[rows]))
        if rows is None:
            out = m
        else:
            out[rows] = m
    return out


def _break_ties(s, m, kth, kv, tied, prefer) -> None:
    """Rows ``tied`` hold more entries equal to their threshold than fit: keep the lowest indices
    (preferred columns first) among those ties, vectorized over the tied rows."""
    sub = s[tied]
    thr = kth[tied]
    above = sub > thr
    eq = sub == thr
    need = (kv - np.count_nonzero(above, axis=1))[:, None]
    if prefer is None:
        rank = np.cumsum(eq, axis=1, dtype=np.int32)
    else:
        pref = eq & prefer[tied]
        n_pref = np.count_nonzero(pref, axis=1)[:, None]
        rank = np.where(pref, np.cumsum(pref, axis=1, dtype=np.int32),
                        n_pref + np.cumsum(eq & ~pref, axis=1, dtype=np.int32))
    m[tied] = above | (eq & (rank <= need))


def lru_stack_hits(masks, L: int, N: int, skip: int = 0) -> np.ndarray:
    """``hits[l, c]``: LRU hits of layer ``l`` with capacity ``c`` (0..N) over a stream of set steps.

    Steps before ``skip`` warm the recency order but are not counted.
    """
    last = np.full((L, N), -1, dtype=np.int64)
    idx = np.arange(N, dtype=np.int64)
    hist = np.zeros((L, N + 2), dtype=np.int64)
    rows = np.arange(L)[:, None]
    for t, m in enumerate(masks):
        if t >= skip:
            key = np.where(last >= 0, last * N + idx, -1)
            order = np.argsort(-key, axis=1, kind="stable")       # most recent first
            rank = np.empty((L, N), dtype=np.int64)
            rank[rows, order] = np.arange(1, N + 1)
            rank = np.where(last >= 0, rank, N + 1)                 # never used: a miss at any size
            counted = np.where(m, rank, 0)                          # bin 0 collects the non-accessed
            flat = (counted + rows * (N + 2)).ravel()
            hist += np.bincount(flat, minlength=L * (N + 2)).reshape(L, N + 2)
        last[m] = t
    hist[:, 0] = 0
    return np.cumsum(hist[:, : N + 1], axis=1)                     # hits with capacity c = ranks 1..c


def penalize(scores: np.ndarray, favoured: np.ndarray, gamma: float) -> np.ndarray:
    """``scores * (c + gamma * (1 - c))`` with ``c = favoured``, in the scores' own float type.

    The product is rounded to that type (float32 for traces): the compiled :func:`select_row`
    computes exactly the same values, so both paths rank identically."""
    s = np.asarray(scores)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float32)
    return np.where(favoured, s, s * s.dtype.type(gamma))


# ----------------------------------------------------------------------------------------- compiled
@njit
def _kth_largest(s, k, hist, cand):
    """``(v, above)``: the ``k``-th largest of the non-negative finite float32 ``s`` (``1 <= k <=
    len(s)``) and how many entries are strictly larger.

    Radix selection on the float's bits, which order non-negative floats as their values do: one
    pass counts the values per bucket of the top 12 bits (sign, exponent, three mantissa bits),
    the bucket holding the k-th largest is found from the top, and only that bucket's values are
    partitioned. numba's ``np.partition`` over the whole row runs at a third of numpy's speed."""
    N = s.shape[0]
    bits = s.view(np.uint32)
    hist[:] = 0
    for n in range(N):
        hist[bits[n] >> 20] += 1
    acc = 0
    b = hist.shape[0] - 1
    while acc + hist[b] < k:
        acc += hist[b]
        b -= 1
    m = 0
    for n in range(N):
        cand[m] = s[n]
        m += (bits[n] >> 20) == b    # branch-free compaction of the bucket's values
    r = k - acc                      # the r-th largest of the bucket's m values
    v = np.partition(cand[:m], m - r)[m - r]
    above = acc
    for i in range(m):
        above += cand[i] > v
    return v, above


@njit
def _take_top_among(s, allowed, k, thr, out):
    """Mark the ``allowed`` entries above ``thr`` and, in index order, as many equal to it as ``k``
    needs."""
    N = s.shape[0]
    above = 0
    for n in range(N):
        above += allowed[n] and s[n] > thr
    need = k - above
    for n in range(N):
        take = False
        if allowed[n]:
            v = s[n]
            take = v > thr
            if not take and v == thr and need > 0:
                take = True
                need -= 1
        out[n] = take


@njit
def _radix_level(bits, src, idx, m, r, shift, width, hist, out):
    """One radix level of :func:`topk_row` over ``m`` candidates: the entries ``src[:m]``
    (ascending indices), or with ``src`` None the whole row, each entry once. The digit
    ``(bits >> shift) & width`` holding the ``r``-th largest is found from a histogram; candidates
    with larger digits are marked in ``out`` (with ``src`` None: ``out`` is written, not just
    marked), those with equal digits listed (in order) in ``idx``, which may be ``src`` itself.
    Returns ``(listed, how many of them are still needed)``.

    numba compiles the two uses apart and drops the branches on ``src is None`` from each: the
    first level reads the row directly, the later ones through the list."""
    hist[:width + 1] = 0
    hi = 0
    w = np.uint32(width)
    for j in range(m):
        c = j if src is None else src[j]
        d = np.int64((bits[c] >> shift) & w)
        hist[d] += 1
        hi = max(hi, d)
    acc = 0
    while acc + hist[hi] < r:
        acc += hist[hi]
        hi -= 1
    ud = np.uint32(hi)
    kept = 0
    for j in range(m):          # branch-free: kept <= j, so src[j] is read before idx overwrites it
        c = j if src is None else src[j]
        d = (bits[c] >> shift) & w
        out[c] = (d > ud) if src is None else out[c] | (d > ud)
        idx[kept] = c
        kept += d == ud
    return kept, r - acc


@njit
def topk_row(s, k, out, cand, hist):
    """``out[n] = True`` for exactly the ``k`` largest ``s[n]`` (ties: lowest index), as
    :func:`topk_mask` does for one row; ``s`` holds non-negative finite float32 magnitudes. ``cand``
    (float32, the scores' length) and ``hist`` (int64 [4096]) are scratch space.

    Radix selection on the floats' bits, which order non-negative floats as their values do (the
    sign bit is ignored, so -0.0 counts as 0.0). The first level histograms the leading 11 bits
    (exponent and three mantissa bits) of the whole row, finds the digit of the k-th largest,
    marks every entry above it and lists the entries with that digit, in index order, in
    ``cand``'s memory (a few percent of the row: an exponent-only digit leaves a third of a short
    row there, and the list costs more than it saves). Levels of 8 bits then run over that short
    list until the entries left share the threshold value; the lowest indices among them are
    taken. Against partitioning the bucket's values (numba's ``np.partition``) and rescanning the
    row for the threshold's ties, which it replaced: 1.6x faster on 14,336 columns, 2.6x on 576.
    """
    N = s.shape[0]
    if k <= 0:
        out[:] = False
        return
    if k >= N:
        out[:] = True
        return
    bits = s.view(np.uint32)
    idx = cand.view(np.int32)
    m, r = _radix_level(bits, None, idx, N, k, 20, 0x7FF, hist, out)
    shift = 20
    while shift > 0 and r < m:
        nxt = max(0, shift - 8)
        m, r = _radix_level(bits, idx, idx, m, r, nxt, (1 << (shift - nxt)) - 1, hist, out)
        shift = nxt
    for j in range(r):          # entries left are equal: the lowest indices
        out[idx[j]] = True


@njit
def topk_rows(scores, k, out):
    """:func:`topk_row` for every row of ``scores [T, N]`` (one layer's tokens), into ``out``."""
    T, N = scores.shape
    cand = np.empty(N, np.float32)
    hist = np.empty(4096, np.int64)
    for t in range(T):
        topk_row(scores[t], k, out[t], cand, hist)


@njit
def _topk_among(s, allowed, k, out, vals, cand, hist):
    """Top-``k`` of ``s`` among the columns where ``allowed``, the others never chosen (ties: lowest
    index); ``k`` must not exceed the number of allowed columns. ``vals``, ``cand``: scratch rows."""
    N = s.shape[0]
    n_ok = 0
    for n in range(N):
        if allowed[n]:
            vals[n_ok] = s[n]
            n_ok += 1
    if k <= 0:
        out[:] = False
    elif k >= n_ok:
        out[:] = allowed
    else:
        _take_top_among(s, allowed, k, _kth_largest(vals[:n_ok], k, hist, cand)[0], out)


@njit
def select_row(code, params, s, resident, k, out, work, fav, hist):
    """One token's mask of one layer under selection rule ``code`` (see ``SELECT_*``).

    ``s``: scores [N] (non-negative float32 magnitudes); ``resident``: the layer's cache contents
    [N] bool; ``out``: the mask [N] bool. Scratch space from :func:`scratch`.
    dip-ca (``masking.dip_ca``): s' = s if favoured else s * gamma, favoured = resident or among
    the ``fixed_top_n`` largest raw scores; top-k of s'; gamma = 0 takes the favoured columns
    first (by score) and fills up with the rest (by score). Threshold (``masking.cats_ca``): the
    columns whose s' = s if resident else s * gamma (float32, as ``penalize``) exceeds tau.
    """
    N = s.shape[0]
    if code == SELECT_TOPK:
        topk_row(s, k, out, work[2], hist)
        return
    if code == SELECT_THRESHOLD_CA:
        g32 = np.float32(params[0])
        tau = params[1]
        for n in range(N):
            v = s[n] if resident[n] else s[n] * g32
            out[n] = v > tau
        return
    gamma = params[0]
    n_fixed = int(params[1])
    if gamma == 1.0:
        topk_row(s, k, out, work[2], hist)
        return
    if n_fixed > 0:
        topk_row(s, min(n_fixed, N), fav, work[2], hist)
        for n in range(N):
            fav[n] = fav[n] or resident[n]
        favoured = fav
    else:
        favoured = resident
    if gamma > 0.0:
        pen = work[0]
        g = np.float32(gamma)   # rounded to float32, as numpy's penalize does
        for n in range(N):
            pen[n] = s[n] if favoured[n] else s[n] * g
        topk_row(pen, k, out, work[2], hist)
        return
    if n_fixed == 0:
        fav[:] = resident
    n_fav = 0
    for n in range(N):
        n_fav += fav[n]
    if n_fav >= k:
        _topk_among(s, fav, k, out, work[1], work[2], hist)
        return
    for n in range(N):          # every favoured column, then the best of the rest
        fav[n] = not fav[n]
    _topk_among(s, fav, k - n_fav, out, work[1], work[2], hist)
    for n in range(N):
        out[n] = out[n] or not fav[n]


@njit
def scratch(n_columns):
    """Scratch space of :func:`select_row` for rows of ``n_columns`` scores: ``work, fav, hist``."""
    return np.empty((3, n_columns), np.float32), np.empty(n_columns, np.bool_), np.empty(4096, np.int64)


@njit
def step_outcomes(masks, hits, selected, hit_count, missed_bits):
    """Per step (row) of ``masks, hits [T, N]`` (bool, hits within masks): columns selected, hits,
    and the missed columns packed as ``np.packbits`` packs them (first column in the high bit), in
    one pass -- what replay records of each layer, at a fraction of numpy's three passes."""
    T, N = masks.shape
    full = N // 8
    for t in range(T):
        m = masks[t]
        h = hits[t]
        ns = 0
        nh = 0
        for n in range(N):
            ns += m[n]
            nh += h[n]
        selected[t] = ns
        hit_count[t] = nh
        for j in range(full):
            byte = 0
            for i in range(8):
                byte = (byte << 1) | (m[8 * j + i] & (h[8 * j + i] ^ True))
            missed_bits[t, j] = byte
        if full * 8 < N:
            byte = 0
            for i in range(8):
                n = full * 8 + i
                byte = (byte << 1) | ((m[n] & (h[n] ^ True)) if n < N else 0)
            missed_bits[t, full] = byte
