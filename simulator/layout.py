"""Where each weight column lives on flash, and how a token's misses become read requests.

Placement (one file, layer after layer): for each layer, the up/gate region -- column ``i`` of
W_up and column ``i`` of W_gate bundled side by side, since one mask selects both -- then the
down region, W_down's columns contiguous. With separate up and gate masks each gets its own
region. A neuron-level policy's ``neuron`` group (index i of d_ff: row i of W_gate and W_up, column
i of W_down) is placed by ``neurons``:

* ``bundled`` (PowerInfer-2, LLM in a Flash): neuron i's pieces side by side, ``gate|up|down``, so a
  missed neuron is one contiguous extent of the bundle's bytes;
* ``separate``: one region per matrix (W_gate's rows, then W_up's rows, then W_down's columns, each
  in neuron order), so a missed neuron is one extent in each -- two or three smaller reads.

Within a region a column's slot is its index, or a permutation learned on a calibration prefix of
the access log (a neuron's pieces share its slot):

* ``frequency``: columns sorted by how often they missed (hot columns together);
* ``coactivation``: columns sorted by the leading singular vector of the prefix's token x column
  miss matrix (a spectral ordering: columns that miss on the same tokens land side by side), so
  misses coalesce into bigger reads.

Requests: each missed column is the byte extent of its slot; ``devices.flash.extents_to_requests``
widens extents to whole pages, merges those that touch or overlap within a layer, and splits runs
longer than the device's maximum request size -- vectorized over the layers of a token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError

from .devices.requests import Requests, extents_to_requests
from .config import NEURON_LAYOUTS, REORDERS, LayoutConfig
from .replay import AccessLog



@dataclass(frozen=True)
class Region:
    group: str
    n_columns: int
    bytes_per_column: float
    base: np.ndarray          # [L] byte offset of the region in each layer
    slot: np.ndarray | None   # [L, N] slot of each column (None: slot = index)
    n_parts: int = 1          # separate neurons: one sub-region per matrix, a column's piece in each

    @property
    def part_bytes(self) -> float:
        return self.bytes_per_column / self.n_parts

    def part_base(self, part: int) -> np.ndarray:
        """``[L]`` byte offset of sub-region ``part`` (pieces of every column, in slot order)."""
        return np.asarray(self.base, dtype=np.float64) + part * self.n_columns * self.part_bytes


class Layout:
    """Byte placement of every weight column of every layer (see the module docstring)."""

    @classmethod
    def of(cls, log: AccessLog, layout: Any = None) -> "Layout":
        """``layout`` as a Layout of ``log``: one already built, a ``LayoutConfig``, or a mapping of its
        fields (checked; None: the defaults)."""
        if isinstance(layout, Layout):
            return layout
        lc = layout if isinstance(layout, LayoutConfig) else LayoutConfig.from_mapping(layout, "layout")
        return cls(log, reorder=lc.reorder, calib_tokens=lc.calib_tokens, neurons=lc.neurons)

    def __init__(self, log: AccessLog, *, reorder: str = "none", calib_tokens: int = 64, neurons: str = "bundled"):
        if reorder not in REORDERS:
            raise DipsimError(f"unknown layout reorder {reorder!r}; allowed: {', '.join(REORDERS)}")
        if neurons not in NEURON_LAYOUTS:
            raise DipsimError(f"unknown neuron layout {neurons!r}; allowed: {', '.join(NEURON_LAYOUTS)}")
        self.L = log.n_layers
        self.reorder, self.neurons = reorder, neurons
        self.regions: dict[str, Region] = {}
        self._order: dict[str, np.ndarray] = {}
        self._pages: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        pos = 0.0
        bases = {g: np.zeros(self.L) for g in log.groups}
        for layer in range(self.L):
            for name, g in log.groups.items():
                bases[name][layer] = pos
                pos += g.n_columns * g.bytes_per_column
        self.total_bytes = int(np.ceil(pos))
        for name, g in log.groups.items():
            slot = None if reorder == "none" else _permutation(log, name, reorder, calib_tokens)
            parts = max(len(g.parts), 1) if neurons == "separate" and name == "neuron" else 1
            self.regions[name] = Region(name, g.n_columns, g.bytes_per_column, bases[name], slot, parts)

    def slot_order(self, group: str) -> np.ndarray:
        """``[L, N]`` int64: the column in each slot (the inverse of the region's permutation); a
        ``[1, 1]`` placeholder when slots are in column order."""
        r = self.regions[group]
        if r.slot is None:
            return np.zeros((1, 1), dtype=np.int64)
        if group not in self._order:
            order = np.empty_like(r.slot, dtype=np.int64)
            np.put_along_axis(order, r.slot.astype(np.int64), np.arange(r.n_columns)[None, :], axis=1)
            self._order[group] = order
        return self._order[group]

    def slot_pages(self, group: str, page: int, part: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``[L, N]`` int64 page-aligned start and end of every slot's bytes in sub-region ``part`` (what
        a read of the column's piece in that slot covers), kept per group, page size and part."""
        key = (group, page, part)
        if key not in self._pages:
            r = self.regions[group]
            x = r.part_base(part)[:, None] + np.arange(r.n_columns)[None, :] * r.part_bytes
            a = np.floor(x).astype(np.int64)
            e = np.ceil(x + r.part_bytes).astype(np.int64)
            self._pages[key] = ((a // page) * page, -((-e) // page) * page)
        return self._pages[key]

    def extents(self, group: str, missed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Byte extents ``(layer, start, end)`` of the columns in ``missed [L, N]``, sorted by offset."""
        _, layer, start, end = self.block_extents(group, missed[None])
        return layer, start, end

    def block_extents(self, group: str, missed: np.ndarray) -> tuple[np.ndarray, ...]:
        """Byte extents ``(token, layer, start, end)`` of the columns in ``missed [T, L, N]`` (a column
        of a separate neuron layout: one extent per matrix), sorted by token, layer and offset."""
        r = self.regions[group]
        tok, layer, col = np.nonzero(missed)
        slot = col if r.slot is None else r.slot[layer, col]
        tok, layer, slot, part = (np.tile(tok, r.n_parts), np.tile(layer, r.n_parts), np.tile(slot, r.n_parts),
                                  np.repeat(np.arange(r.n_parts), len(col)))
        start = np.asarray(r.base, dtype=np.float64)[layer] + (part * r.n_columns + slot) * r.part_bytes
        order = np.lexsort((start, layer, tok))
        tok, layer, start = tok[order], layer[order], start[order]
        return tok, layer, np.floor(start).astype(np.int64), np.ceil(start + r.part_bytes).astype(np.int64)

    def requests(self, group: str, missed: np.ndarray, page_bytes: int, max_request_bytes: float) -> Requests:
        """The read requests that fetch the columns of ``missed [L, N]`` (one token, one group),
        each tagged with its layer (``segments``): requests never span two layers."""
        layer, start, end = self.extents(group, missed)
        return extents_to_requests(start, end, page_bytes=page_bytes, max_request_bytes=max_request_bytes,
                                   segments=layer)

    def region_requests(self, group: str, page_bytes: int, max_request_bytes: float) -> Requests:
        """Requests that read a whole group region of every layer (streaming the dense matrix)."""
        r = self.regions[group]
        start = np.floor(r.base).astype(np.int64)
        end = np.ceil(r.base + r.n_columns * r.bytes_per_column).astype(np.int64)
        return extents_to_requests(start, end, page_bytes=page_bytes, max_request_bytes=max_request_bytes,
                                   segments=np.arange(self.L))


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
