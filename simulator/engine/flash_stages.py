"""The flash reads of every stage of every token, and how long the device takes for each batch.

A stage is one matrix group's reads in one layer of one token: per layer the up/gate stage (the
``upgate`` group, or ``up`` and ``gate``, or CATS's dense ``gate``) then the down stage (``down``, or
the ``neuron`` group of a neuron-level policy). A stage's misses become read
requests through the layout (page-aligned, merged when they touch, split at the device's maximum
request size; built in one compiled pass by ``stage_requests``); its batch time comes from the flash model's queue (``devices.flash``), evaluated for
many batches in one compiled loop. A stage whose columns do not depend on the token (dense groups,
static masking) is read ahead: its requests join one background batch per token (``prefetch``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.jit import njit

from ..devices.flash import link_done_last, unit_done_times
from ..devices.requests import sequential_mask, size_histogram
from ..layout import Layout
from ..replay import AccessLog
from .stage_requests import block_requests


@njit
def stage_times(stage_of, size, seq, n_stages, latency, penalty, unit_bw, link_bw, P, host, Q):
    """Batch time of every stage (requests grouped by stage, in issue order): the model of
    ``devices.flash.FlashModel.schedule`` evaluated for many batches in one compiled loop."""
    out = np.zeros(n_stages)
    n = size.shape[0]
    i = 0
    while i < n:
        s_id = stage_of[i]
        j = i
        while j < n and stage_of[j] == s_id:
            j += 1
        t = np.empty(j - i)
        x = np.empty(j - i)
        for r in range(j - i):
            t[r] = latency + size[i + r] / unit_bw + (0.0 if seq[i + r] else penalty)
            x[r] = size[i + r] / link_bw
        out[s_id] = link_done_last(unit_done_times(t, min(P, j - i), host, Q), x)
        i = j
    return out


#: groups read in a layer's second stage, once the first stage's output is known
SECOND_STAGE = ("down", "neuron")


def stage_groups(log: AccessLog) -> list[list[str]]:
    """The groups of the two stages of a layer: up/gate (one or two groups; CATS's dense W_gate; none
    for a policy whose neurons bundle the gate), then down or the neurons (whose selection needs the
    first stage's output: CATS's gate activation; a look-ahead predictor's is known earlier)."""
    return [[g for g in log.groups if g not in SECOND_STAGE], [g for g in log.groups if g in SECOND_STAGE]]


def known_early(log: AccessLog, prefetch: bool) -> list[bool]:
    """Per stage: whether its columns are known before the token's activations (read ahead)."""
    static = log.config.get("masking") == "static"
    return [prefetch and all(static or bool((log.groups[g].k >= log.groups[g].n_columns).all()) for g in names)
            for names in stage_groups(log)]


@dataclass
class FlashStages:
    """Per token and layer, each stage's flash batch time, and per token what the device read."""

    time: np.ndarray                 # [T, L, 2] seconds (0 for stages read ahead)
    background: np.ndarray           # [T] seconds of the token's read-ahead batch
    bytes: np.ndarray                # [T] bytes read (page-rounded requests)
    requests: np.ndarray             # [T] requests
    histogram: dict[int, int]        # request size -> count
    early: list[bool]
    fine: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def flash_stages(log: AccessLog, lay: Layout, fl, *, prefetch: bool, keep_requests: bool) -> FlashStages:
    """Build every stage's requests, a block of tokens at a time, and time their batches.

    Stage id = (token * L + layer) * 2 + (0 up/gate, 1 down); requests sorted by stage and offset,
    so the device sees them layer by layer, up/gate before down, ascending offsets. With
    ``keep_requests`` each stage's request sizes are kept for the per-request (fine) simulation."""
    T, L = log.n_tokens, log.n_layers
    stages = stage_groups(log)
    early = known_early(log, prefetch)
    out = FlashStages(np.zeros((T, L, 2)), np.zeros(T), np.zeros(T), np.zeros(T), {}, early)
    prev_end = None
    kernel = (float(fl.latency), float(fl.random_penalty), float(fl.unit_bandwidth), float(fl.link_bandwidth),
              int(min(fl.units, fl.queue_depth, 1 << 30)), float(fl.host_overhead), int(min(fl.queue_depth, 1 << 30)))
    block = max(1, min(T, 4_000_000 // max(sum(g.n_columns for g in log.groups.values()) * L, 1)))
    for t0 in range(0, T, block):
        t1 = min(t0 + block, T)
        req = block_requests(log, lay, stages, t0, t1, page_bytes=int(fl.page_bytes),
                             max_request_bytes=fl.max_request_bytes)
        seq = sequential_mask(req.offsets, req.sizes, prev_end)
        if len(req.sizes):
            prev_end = int(req.offsets[-1] + req.sizes[-1])
        n_st = (t1 - t0) * L * 2
        sizes = req.sizes.astype(np.float64)
        out.time[t0:t1] = stage_times(req.segments, sizes, seq, n_st, *kernel).reshape(t1 - t0, L, 2)
        tok_of = req.segments // (2 * L)
        if any(early):
            e = np.array(early)[req.segments % 2]
            out.background[t0:t1] = stage_times(tok_of[e], sizes[e], seq[e], t1 - t0, *kernel)
            for s_i, is_early in enumerate(early):
                if is_early:
                    out.time[t0:t1, :, s_i] = 0.0
        out.bytes[t0:t1] = np.bincount(tok_of, weights=req.sizes, minlength=t1 - t0)
        out.requests[t0:t1] = np.bincount(tok_of, minlength=t1 - t0)
        for k, v in size_histogram(req.sizes).items():
            out.histogram[k] = out.histogram.get(k, 0) + v
        if keep_requests:
            bounds = req.segment_starts(n_st)
            for sid in np.flatnonzero(np.diff(bounds)):
                a, b = bounds[sid], bounds[sid + 1]
                if not early[sid % 2]:
                    out.fine[(t0 + sid // (2 * L), (sid // 2) % L, sid % 2)] = (sizes[a:b], seq[a:b])
    return out
