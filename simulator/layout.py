"""Where each weight column lives on flash, and how a token's misses become read requests.

Placement (one file, layer after layer): for each layer, the up/gate region -- column ``i`` of
W_up and column ``i`` of W_gate bundled side by side, since one mask selects both -- then the
down region, W_down's columns contiguous. With separate up and gate masks each gets its own
region. Within a region a column's slot is its index, or a permutation learned on a calibration
prefix of the access log:

* ``frequency``: columns sorted by how often they missed (hot columns together);
* ``coactivation``: columns sorted by the leading singular vector of the prefix's token x column
  miss matrix (a spectral ordering: columns that miss on the same tokens land side by side), so
  misses coalesce into bigger reads.

Requests: each missed column is the byte extent of its slot; extents are widened to whole pages,
extents that touch or overlap after that merge into one request, and runs longer than the device's
maximum request size are split. All of it is vectorized over the layers of a token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.errors import DipsimError

from .replay import AccessLog

REORDERS = ("none", "frequency", "coactivation")


@dataclass(frozen=True)
class Region:
    group: str
    n_columns: int
    bytes_per_column: float
    base: np.ndarray          # [L] byte offset of the region in each layer
    slot: np.ndarray | None   # [L, N] slot of each column (None: slot = index)


@dataclass(frozen=True)
class Requests:
    """The read requests of one token and group, in issue order (layer by layer, ascending offset)."""

    layer: np.ndarray    # [R] int
    offset: np.ndarray   # [R] int64 bytes
    size: np.ndarray     # [R] int64 bytes (page multiples)

    def per_layer(self, L: int) -> np.ndarray:
        """Start index of each layer's requests: ``size[start[l]:start[l + 1]]``."""
        return np.searchsorted(self.layer, np.arange(L + 1))


class Layout:
    """Byte placement of every weight column of every layer (see the module docstring)."""

    def __init__(self, log: AccessLog, *, reorder: str = "none", calib_tokens: int = 64):
        if reorder not in REORDERS:
            raise DipsimError(f"unknown layout reorder {reorder!r}; allowed: {', '.join(REORDERS)}")
        self.L = log.n_layers
        self.reorder = reorder
        self.regions: dict[str, Region] = {}
        pos = 0.0
        bases = {g: np.zeros(self.L) for g in log.groups}
        for layer in range(self.L):
            for name, g in log.groups.items():
                bases[name][layer] = pos
                pos += g.n_columns * g.bytes_per_column
        self.total_bytes = int(np.ceil(pos))
        for name, g in log.groups.items():
            slot = None if reorder == "none" else _permutation(log, name, reorder, calib_tokens)
            self.regions[name] = Region(name, g.n_columns, g.bytes_per_column, bases[name], slot)

    def extents(self, group: str, missed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Byte extents ``(layer, start, end)`` of the columns in ``missed [L, N]``, sorted by offset."""
        r = self.regions[group]
        layer, col = np.nonzero(missed)
        slot = col if r.slot is None else r.slot[layer, col]
        order = np.lexsort((slot, layer)) if r.slot is not None else slice(None)
        layer, slot = layer[order], slot[order]
        start = r.base[layer] + slot * r.bytes_per_column
        return layer, np.floor(start).astype(np.int64), np.ceil(start + r.bytes_per_column).astype(np.int64)

    def requests(self, group: str, missed: np.ndarray, page_bytes: int, max_request_bytes: int) -> Requests:
        """The read requests that fetch the columns of ``missed [L, N]`` (one token, one group)."""
        layer, start, end = self.extents(group, missed)
        return coalesce(layer, start, end, page_bytes, max_request_bytes)

    def region_requests(self, group: str, page_bytes: int, max_request_bytes: int) -> Requests:
        """Requests that read a whole group region of every layer (streaming the dense matrix)."""
        r = self.regions[group]
        start = np.floor(r.base).astype(np.int64)
        end = np.ceil(r.base + r.n_columns * r.bytes_per_column).astype(np.int64)
        return coalesce(np.arange(self.L), start, end, page_bytes, max_request_bytes)


def coalesce(layer: np.ndarray, start: np.ndarray, end: np.ndarray, page: int, max_request: int) -> Requests:
    """Page-align extents (sorted by layer, then offset), merge touching ones within a layer, split
    runs longer than ``max_request`` (rounded down to whole pages)."""
    if page <= 0 or max_request <= 0:
        raise DipsimError(f"page size and maximum request size must be > 0, got {page} and {max_request}")
    if len(start) == 0:
        e = np.zeros(0, dtype=np.int64)
        return Requests(e, e, e)
    a = (start // page) * page
    b = -(-end // page) * page
    new = np.ones(len(a), dtype=bool)
    new[1:] = (a[1:] > b[:-1]) | (layer[1:] != layer[:-1])
    heads = np.flatnonzero(new)
    run_start = a[heads]
    run_end = np.maximum.reduceat(b, heads)
    run_layer = layer[heads]
    chunk = max(page, (max_request // page) * page)
    length = run_end - run_start
    n = -(-length // chunk)
    rep = np.repeat(np.arange(len(heads)), n)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)
    off = run_start[rep] + k * chunk
    size = np.minimum(chunk, run_end[rep] - off)
    return Requests(run_layer[rep].astype(np.int64), off.astype(np.int64), size.astype(np.int64))


def size_histogram(sizes: np.ndarray, counts: np.ndarray | None = None) -> dict[int, int]:
    """Request counts per power-of-two size bucket (bucket = the smallest power of two >= size)."""
    if len(sizes) == 0:
        return {}
    b = (1 << np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64))
    keys, cnt = np.unique(b, return_counts=True)
    return {int(k): int(c) for k, c in zip(keys, cnt)}


def _permutation(log: AccessLog, group: str, how: str, calib_tokens: int) -> np.ndarray:
    g = log.groups[group]
    T = min(calib_tokens, log.n_tokens)
    miss = np.stack([g.missed_mask(t) for t in range(T)]).astype(np.float32)  # [T, L, N]
    L, N = miss.shape[1], miss.shape[2]
    slot = np.empty((L, N), dtype=np.int64)
    for layer in range(L):
        m = miss[:, layer, :]
        freq = m.sum(axis=0)
        if how == "frequency":
            key = -freq
        else:
            key = _fiedler_like(m)
        order = np.lexsort((np.arange(N), key))  # stable: ties keep index order
        slot[layer, order] = np.arange(N)
    return slot


def _fiedler_like(m: np.ndarray, iters: int = 30) -> np.ndarray:
    """Sort key from the leading right singular vector of the miss matrix ``[T, N]`` (power
    iteration): columns that miss on the same tokens get close values, and since the matrix is
    non-negative the vector is too, so columns that always miss end up together at one end."""
    v = np.ones(m.shape[1], dtype=np.float32) / np.sqrt(max(m.shape[1], 1))
    for _ in range(iters):
        w = m.T @ (m @ v)
        norm = np.linalg.norm(w)
        if norm == 0:
            return np.zeros(m.shape[1])
        v = w / norm
    return -v
