"""A block of tokens' misses turned into read requests in one compiled pass.

The same requests as ``Layout.block_extents`` followed by ``devices.requests.extents_to_requests``
(the readable reference, which the tests compare with this on random logs): each missed column is
the byte extent of its slot, widened to whole pages; extents that touch or overlap within a stage
merge into one run; a run longer than the device's maximum request is cut from its start. Stage id
= (token * L + layer) * 2 + (0 up/gate, 1 down); requests come out sorted by stage and offset.

The reference unpacks every bit of ``[T, L, N]`` and sorts the extents; this walks the packed bits
slot by slot (skipping zero bytes when slots are in column order), so the engine's request
building no longer dominates a sweep point.
"""
from __future__ import annotations

import math

import numpy as np

from common.errors import DipsimError
from common.jit import njit

from ..devices.requests import Requests
from ..layout import Layout
from ..replay import AccessLog


@njit
def _put(seg, off, size, n, seg_id, start, end, m):
    """Write the requests of run [start, end) of stage ``seg_id`` from position ``n``: one request,
    or pieces of ``m`` bytes from its start when m > 0. Returns the new count."""
    if m <= 0:
        seg[n], off[n], size[n] = seg_id, start, end - start
        return n + 1
    pos = start
    while pos < end:
        seg[n], off[n], size[n] = seg_id, pos, min(m, end - pos)
        n += 1
        pos += m
    return n


@njit
def _walk(bits, order, ident, first, last, ncols, stage, m, seg, off, size):
    """One pass over the packed misses: ``bits[g]`` [T, L, ceil(N/8)] of group g, ``order[g][l, s]``
    the column in slot s (unused where ``ident[g]``), ``first[g][l, s]`` / ``last[g][l, s]`` the
    page-aligned byte range of slot s, ``stage[g]`` 0 or 1. Writes the requests into seg/off/size
    (sized by the caller's bound) and returns their count."""
    T, L = bits[0].shape[0], bits[0].shape[1]
    n = 0
    for t in range(T):
        for layer in range(L):
            for s in range(2):
                seg_id = (t * L + layer) * 2 + s
                have = False
                rs = np.int64(0)
                re = np.int64(0)
                for g in range(len(bits)):
                    if stage[g] != s:
                        continue
                    b, og, fa, la = bits[g], order[g], first[g], last[g]
                    idg = ident[g]
                    N = ncols[g]
                    slot = 0
                    while slot < N:
                        if idg:
                            col = slot
                            if (slot & 7) == 0 and b[t, layer, slot >> 3] == 0:
                                slot += 8
                                continue
                        else:
                            col = og[layer, slot]
                        if (b[t, layer, col >> 3] >> (7 - (col & 7))) & 1:
                            a = fa[layer, slot]
                            e = la[layer, slot]
                            if have and a <= re:
                                re = max(re, e)
                            else:
                                if have:
                                    n = _put(seg, off, size, n, seg_id, rs, re, m)
                                rs, re, have = a, e, True
                        slot += 1
                if have:
                    n = _put(seg, off, size, n, seg_id, rs, re, m)
    return n


def block_requests(log: AccessLog, lay: Layout, stages: list[list[str]], t0: int, t1: int, *,
                   page_bytes: int, max_request_bytes: float) -> Requests:
    """The read requests of tokens [t0, t1), each tagged with its stage id relative to ``t0``. A group
    placed in several sub-regions (separate neuron layout) is walked once per sub-region, in offset
    order, so each missed neuron gives one extent per matrix."""
    entries = [(s, g, p) for s, names in enumerate(stages) for g in names for p in range(lay.regions[g].n_parts)]
    names = [g for _, g, _ in entries]
    packed = {g: np.ascontiguousarray(log.groups[g].missed_bits[t0:t1]) for g in set(names)}
    bits = tuple(packed[g] for g in names)
    order = tuple(lay.slot_order(g) for g in names)
    ident = np.array([lay.regions[g].slot is None for g in names])
    bounds = [lay.slot_pages(g, int(page_bytes), p) for _, g, p in entries]
    ncols = np.array([log.groups[g].n_columns for g in names], dtype=np.int64)
    stage = np.array([s for s, _, _ in entries], dtype=np.int64)
    m = -1 if math.isinf(max_request_bytes) else int(max_request_bytes)
    if not max_request_bytes >= page_bytes or page_bytes < 1:
        raise DipsimError(f"max_request_bytes ({max_request_bytes}) must be >= page_bytes ({page_bytes}) >= 1")
    args = (bits, order, ident, tuple(b[0] for b in bounds), tuple(b[1] for b in bounds), ncols, stage, np.int64(m))
    # at most one run per missed piece, and a run of c pieces spans at most c * (piece + 2 pages)
    bound = 0
    for g, b in zip(names, bits):
        per = 1 if m < 0 else 1 + math.ceil((lay.regions[g].part_bytes + 2 * page_bytes) / m)
        bound += int(np.unpackbits(b).sum(dtype=np.int64)) * per
    seg, off, size = np.empty(bound, np.int64), np.empty(bound, np.int64), np.empty(bound, np.int64)
    n = _walk(*args, seg, off, size)
    seg, off, size = seg[:n], off[:n], size[:n]
    return Requests(off, size, seg)
