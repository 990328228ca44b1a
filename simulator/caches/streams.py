"""Synthetic request streams over few ids, for checking the cache policies against their plain
references (``caches.reference``) and against libCacheSim (``benchmarks/caches.py``): long streams
on which the rare paths of the policies happen -- ghost rings that fill and wrap, ARC's target
moving both ways, frequency ties, sets larger than the capacity.

    ids = streams.requests("zipf", n=64, length=20_000, seed=1)   # [R] int64 ids in 0..n-1
    masks = streams.steps(ids, n=64, max_set=12, seed=1)          # [T, n] bool: consecutive ids as sets

Kinds (``KINDS``), every one over a random permutation of the ids (so that popularity and index
do not coincide; set steps break ties by index):

    uniform   every id equally likely
    zipf      popularity ~ 1 / rank^1.1
    loop      cycles over a window of about half the ids, with a random id now and then: LRU's
              and FIFO's worst case once the window exceeds the capacity
    scan      a Zipf hot set interrupted by sequential scans over all the ids (scan pollution)
    phases    a hot set of a fifth of the ids that moves every eighth of the stream
    mixture   segments of the kinds above, one after another
"""
from __future__ import annotations

import numpy as np

from common.errors import DipsimError

KINDS = ("uniform", "zipf", "loop", "scan", "phases", "mixture")


def _zipf(rng: np.random.Generator, n: int, size: int, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return rng.choice(n, size=size, p=p / p.sum())


def _loop(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    w = int(rng.integers(max(1, n // 3), max(2, (2 * n) // 3) + 1))
    out = (int(rng.integers(0, w)) + np.arange(size)) % w
    noise = rng.random(size) < 0.05
    out[noise] = rng.integers(0, n, int(noise.sum()))
    return out


def _scan(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    hot = _zipf(rng, max(1, n // 4), size)
    out = hot.copy()
    pos = 0
    while pos < size:
        pos += int(rng.integers(n // 2, 4 * n + 1))          # hot requests, then a scan of every id
        out[pos:pos + n] = np.arange(n)[:max(0, min(n, size - pos))]
        pos += n
    return out


def _phases(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    out = rng.integers(0, n, size)
    h = max(1, n // 5)
    bounds = np.linspace(0, size, 9).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        hot = rng.choice(n, size=h, replace=False)
        pick = rng.random(b - a) < 0.9
        out[a:b][pick] = hot[rng.integers(0, h, int(pick.sum()))]
    return out


def _mixture(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    cuts = np.sort(rng.integers(0, size + 1, 4))
    bounds = np.concatenate([[0], cuts, [size]])
    kinds = rng.choice(len(KINDS) - 1, size=len(bounds) - 1)
    return np.concatenate([_MAKERS[KINDS[k]](rng, n, int(b - a)) for k, a, b in zip(kinds, bounds[:-1], bounds[1:])])


_MAKERS = {"uniform": lambda rng, n, size: rng.integers(0, n, size), "zipf": _zipf, "loop": _loop, "scan": _scan,
           "phases": _phases, "mixture": _mixture}


def requests(kind: str, n: int, length: int, seed: int) -> np.ndarray:
    """``length`` requests (int64 ids in ``0..n-1``) of the stream ``kind``, fixed by ``seed``."""
    if kind not in _MAKERS:
        raise DipsimError(f"unknown stream kind {kind!r}; allowed: {', '.join(KINDS)}")
    if n < 1 or length < 0:
        raise DipsimError(f"a stream needs n >= 1 ids and length >= 0, got n={n}, length={length}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    return perm[_MAKERS[kind](rng, n, length)].astype(np.int64)


def steps(ids: np.ndarray, n: int, max_set: int, seed: int) -> np.ndarray:
    """The requests ``ids`` cut into consecutive sets of 1 to ``max_set`` requests (sizes uniform,
    fixed by ``seed``), as masks ``[T, n]``; a set holds each of its ids once."""
    sizes = np.random.default_rng(seed).integers(1, max(1, max_set) + 1, size=len(ids) + 1)
    ends = np.cumsum(sizes)
    ends = ends[:np.searchsorted(ends, len(ids)) + 1]
    ends[-1] = len(ids)
    step_of = np.searchsorted(ends, np.arange(len(ids)), side="right")
    masks = np.zeros((len(ends), n), dtype=bool)
    masks[step_of, ids] = True
    return masks
