"""Read requests from byte extents: page-aligned, merged where they touch, split at the device's
maximum request size; which requests continue the previous one (sequential); their size histogram."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from common.errors import DipsimError

INF = math.inf


class Requests(NamedTuple):
    """Read requests in issue order: byte offsets and sizes (int64 arrays of equal length), and the
    segment (e.g. layer) each belongs to when the extents came with segments."""

    offsets: np.ndarray
    sizes: np.ndarray
    segments: np.ndarray | None = None

    def segment_starts(self, n_segments: int) -> np.ndarray:
        """Index of the first request of each segment: ``sizes[starts[k]:starts[k + 1]]``."""
        return np.searchsorted(self.segments, np.arange(n_segments + 1))


def page_round(start, end, page: int | float):
    """Page-aligned cover of byte range(s) [start, end): ``(floor(start/page)*page, ceil(end/page)*page)``.

    Works on scalars and arrays; returns int64 for finite pages (``page`` must be >= 1).
    """
    if not page >= 1:
        raise DipsimError(f"page size must be >= 1 byte, got {page}")
    s = np.asarray(start, dtype=np.int64)
    e = np.asarray(end, dtype=np.int64)
    if np.any(e < s):
        raise DipsimError("an extent ends before it starts (end < start)")
    p = np.int64(page)
    a = (s // p) * p
    b = -((-e) // p) * p
    if a.ndim == 0:
        return int(a), int(b)
    return a, b


def extents_to_requests(starts, ends, *, page_bytes: int | float = 1,
                        max_request_bytes: int | float = INF, segments=None) -> Requests:
    """Turn byte extents [starts[i], ends[i]) into read requests, vectorized.

    Each extent is first widened to whole pages; extents that then overlap or touch are merged into
    one run; a run longer than ``max_request_bytes`` is cut, from its start, into pieces of exactly
    ``max_request_bytes`` and a shorter last piece. Unsorted input is sorted by start first; empty
    extents (start == end) are dropped. Returns the requests in ascending offset order.

    With ``segments`` (one non-negative int per extent, e.g. its layer), runs never cross a segment
    boundary (different segments are read at different times) and the requests come out sorted by
    (segment, offset), each with its segment.
    """
    s = np.asarray(starts, dtype=np.int64).ravel()
    e = np.asarray(ends, dtype=np.int64).ravel()
    g = None if segments is None else np.asarray(segments, dtype=np.int64).ravel()
    if s.shape != e.shape or (g is not None and g.shape != s.shape):
        raise DipsimError(f"extent starts, ends (and segments) differ in length ({s.size} vs {e.size})")
    if not max_request_bytes >= page_bytes:
        raise DipsimError(f"max_request_bytes ({max_request_bytes}) must be >= page_bytes ({page_bytes})")
    keep = e > s
    if np.any(e < s):
        raise DipsimError("an extent ends before it starts (end < start)")
    s, e = s[keep], e[keep]
    if g is not None:
        g = g[keep]
    if s.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return Requests(z, z.copy(), None if g is None else z.copy())
    if g is None:
        if s.size > 1 and np.any(s[1:] < s[:-1]):
            order = np.argsort(s, kind="stable")
            s, e = s[order], e[order]
    elif s.size > 1:
        if np.any(g[1:] < g[:-1]):  # a stable sort merges already sorted runs in linear time
            order = np.argsort(g, kind="stable")
            s, e, g = s[order], e[order], g[order]
        if np.any((g[1:] == g[:-1]) & (s[1:] < s[:-1])):
            order = np.lexsort((s, g))
            s, e, g = s[order], e[order], g[order]
    a, b = page_round(s, e, page_bytes)
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    new_run = np.empty(a.size, dtype=bool)
    new_run[0] = True
    if g is None:
        reach = np.maximum.accumulate(b)                   # furthest byte covered so far
    else:  # the same within each segment: lift every segment above the previous ones first
        span = np.int64(max(int(b.max()) - int(a.min()), 0) + 1)
        lift = (g - g[0]) * span
        reach = np.maximum.accumulate(b - a.min() + lift) - lift + a.min()
        new_run[1:] = g[1:] != g[:-1]
    new_run[1:] |= a[1:] > reach[:-1]                      # a gap (touching pages merge)
    first = np.flatnonzero(new_run)
    last = np.append(first[1:] - 1, a.size - 1)
    run_start = a[first]
    run_end = reach[last]
    run_seg = None if g is None else g[first]
    if math.isinf(max_request_bytes):
        return Requests(run_start, run_end - run_start, run_seg)
    m = np.int64(max_request_bytes)
    length = run_end - run_start
    pieces = -((-length) // m)                             # ceil(length / m) >= 1
    total = int(pieces.sum())
    run_of_piece = np.repeat(np.arange(first.size), pieces)
    starts_of_runs = np.cumsum(pieces) - pieces
    k = np.arange(total, dtype=np.int64) - starts_of_runs[run_of_piece]
    offsets = run_start[run_of_piece] + k * m
    sizes = np.minimum(m, run_end[run_of_piece] - offsets)
    return Requests(offsets, sizes, None if run_seg is None else run_seg[run_of_piece])


def sequential_mask(offsets, sizes, previous_end: int | None = None) -> np.ndarray:
    """True where a request starts exactly where the one issued before it ended.

    The first request compares against ``previous_end`` (e.g. where the last batch ended); with
    ``None`` it counts as random.
    """
    o = np.asarray(offsets, dtype=np.int64).ravel()
    z = np.asarray(sizes, dtype=np.int64).ravel()
    out = np.zeros(o.size, dtype=bool)
    if o.size:
        out[1:] = o[1:] == o[:-1] + z[:-1]
        out[0] = previous_end is not None and int(o[0]) == int(previous_end)
    return out


def size_histogram(sizes) -> dict[int, int]:
    """Request counts in power-of-two buckets: key ``2**k`` counts sizes in ``(2**(k-1), 2**k]``.

    Zero-byte requests are counted under key 0. Keys come out in ascending order.
    """
    z = np.asarray(sizes, dtype=np.float64).ravel()
    if z.size == 0:
        return {}
    if np.any(z < 0) or not np.all(np.isfinite(z)):
        raise DipsimError("request sizes must be finite and >= 0")
    out: dict[int, int] = {}
    n_zero = int(np.count_nonzero(z == 0))
    if n_zero:
        out[0] = n_zero
    pos = z[z > 0]
    if pos.size:
        mant, expo = np.frexp(pos)                           # pos = mant * 2**expo, mant in [0.5, 1)
        k = np.where(mant == 0.5, expo - 1, expo)            # ceil(log2(pos)), exact
        k = np.maximum(k, 0)                                 # sizes below 1 byte go to the 1-byte bucket
        ks, counts = np.unique(k, return_counts=True)
        for kk, c in zip(ks.tolist(), counts.tolist()):
            out[1 << int(kk)] = int(c)
    return dict(sorted(out.items()))
