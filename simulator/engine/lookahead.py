"""Reads issued one layer ahead: a look-ahead predictor's columns fetched while the previous layer runs.

A policy whose set for layer l is known at layer l-1 (``MaskingPolicy.available_at``: the
``predictor`` policy's down group from ``x[l-1]``, and its up/gate group with ``upgate: predict``)
lets the runtime request those columns as soon as layer l-1's MLP input exists, so their reads
overlap layer l-1's MLP and layer l's attention (Deja Vu, PowerInfer). The host submits them at low
priority: they use the flash device only while no read a layer is waiting for is pending (a read a
layer waits for, issued while look-ahead reads are in flight, goes first -- at the granularity of
stage batches). So look-ahead never delays a dependent read, and a look-ahead stage is done no later
than it would be read on demand: prefetch cannot make a token slower (a test checks it).

Per token and layer (A = attention done; h hits, f flash, m landed columns, the batch mode's stage
times; d the time a stage's reads are done)::

    up/gate:  d0 = look-ahead job done, or the demand read issued at A
              e0 = max(A + h0, d0) + m0           (overlap_io; else max(A, d0) + h0 + m0)
    down:     d1 = look-ahead job done, or the demand read issued at e0
              e1 = max(e0 + h1, d1) + m1

With no look-ahead stage this is the batch mode's sum exactly; ``prefetch: false`` turns it off.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from common.jit import njit

from ..replay import AccessLog


def early_stages(log: AccessLog, prefetch: bool) -> np.ndarray:
    """``[L, 2]`` bool: the stages (up/gate, down) of each layer whose columns are known at the
    previous layer's MLP input, so that their reads can be issued a layer ahead."""
    from .. import masking
    from ..masking.base import policy_params

    L = log.n_layers
    out = np.zeros((L, 2), dtype=bool)
    name = log.config.get("masking")
    if not prefetch or name not in masking.names():
        return out
    cls = masking.REGISTRY.get_class(name)
    if getattr(cls, "available_at", None) is masking.MaskingPolicy.available_at:
        return out                      # every built-in policy but the look-ahead predictor
    policy = masking.make(name, **{k: log.config[k] for k in policy_params(cls) if k in log.config})
    for layer in range(1, L):
        for s, kind in enumerate(("x", "h")):
            out[layer, s] = policy.available_at(kind, layer)[0] < layer
    return out


@njit
def _background(jobs_issue, jobs_left, jobs_done, first, n, cur, until):
    """Run the pending look-ahead jobs ``first..n-1`` (in issue order) from ``cur`` until ``until``;
    returns (first pending job, time the background reached)."""
    while first < n:
        start = max(cur, jobs_issue[first])
        if start >= until:
            break
        work = min(jobs_left[first], until - start)
        jobs_left[first] -= work
        cur = start + work
        if jobs_left[first] <= 0.0:
            jobs_done[first] = cur
            first += 1
        else:
            break
    return first, cur


@njit
def lookahead_timeline(t_attn, f, h, m, early, overlap_io, t_head):
    """Per token: latency, and per (token, layer, stage) when its reads were done and when the stage
    ended (seconds from the token's start). ``t_attn [T]``, ``f, h, m [T, L, 2]``, ``early [L, 2]``."""
    T, L = f.shape[0], f.shape[1]
    latency = np.zeros(T)
    done = np.zeros((T, L, 2))
    end = np.zeros((T, L, 2))
    issue, left, fin = np.zeros(2 * L), np.zeros(2 * L), np.zeros(2 * L)
    job_of = np.full((L, 2), -1)
    for tok in range(T):
        t, free, bg = 0.0, 0.0, 0.0          # free: demand reads done; bg: where the background is
        n = first = 0
        for layer in range(L):
            a = t + t_attn[tok]
            if layer + 1 < L:                 # the next layer's look-ahead reads, issued at this MLP input
                for s in range(2):
                    if early[layer + 1, s]:
                        issue[n], left[n], job_of[layer + 1, s] = a, f[tok, layer + 1, s], n
                        n += 1
            for s in range(2):
                ready = a if s == 0 else end[tok, layer, 0]
                if early[layer, s]:           # run the background (no demand waits now) until the job is done
                    first, bg = _background(issue, left, fin, first, job_of[layer, s] + 1, max(bg, free), 1e300)
                    d = fin[job_of[layer, s]]
                else:                         # a demand read: the background yields to it
                    first, bg = _background(issue, left, fin, first, n, max(bg, free), ready)
                    free = max(free, ready) + f[tok, layer, s]
                    d = free
                done[tok, layer, s] = d
                if overlap_io:
                    end[tok, layer, s] = max(ready + h[tok, layer, s], d) + m[tok, layer, s]
                else:
                    end[tok, layer, s] = max(ready, d) + h[tok, layer, s] + m[tok, layer, s]
            t = end[tok, layer, 1]
        latency[tok] = t + t_head
    return latency, done, end


def chrome_event(name: str, track: str, t0: float, dur: float, tok: int) -> dict[str, Any]:
    """One Chrome-trace complete event (``ph: X``) of ``dur`` seconds from ``t0``, in microseconds."""
    return {"name": name, "ph": "X", "ts": t0 * 1e6, "dur": dur * 1e6, "pid": 1, "tid": track, "args": {"token": tok}}


def timeline_events(latency, t_attn, f, done, end, early, tokens: int) -> list[dict[str, Any]]:
    """Chrome-trace events (``ph: X``, microseconds) of the first ``tokens`` tokens of a look-ahead
    timeline: each layer's attention and stages on the compute track, every stage's flash reads on
    the flash track (look-ahead reads named so)."""
    events: list[dict[str, Any]] = []
    start = 0.0
    T, L = done.shape[0], done.shape[1]

    def add(name, track, t0, dur, tok):
        if dur > 0:
            events.append(chrome_event(name, track, start + t0, dur, tok))

    for tok in range(min(tokens, T)):
        t = 0.0
        for layer in range(L):
            add(f"attention L{layer}", "dram+compute", t, float(t_attn[tok]), tok)
            a = t + float(t_attn[tok])
            for s, label in ((0, "up/gate"), (1, "down")):
                ahead = " (look-ahead)" if early[layer, s] else ""
                d = float(done[tok, layer, s])     # drawn as if read in one piece just before it was done
                add(f"flash L{layer} {label}{ahead}", "flash", d - float(f[tok, layer, s]), float(f[tok, layer, s]), tok)
                begin = a if s == 0 else float(end[tok, layer, 0])
                add(f"L{layer} {label}", "dram+compute", begin, float(end[tok, layer, s]) - begin, tok)
            t = float(end[tok, layer, 1])
        start += float(latency[tok])
    return events
