"""Flash storage model: per-request latency, parallel units, a shared host link, page granularity.

The model (the engine depends on it exactly as written here)::

    parameters   latency L            time before data flows (command overhead + NAND tR), s
                 unit_bandwidth ub    bytes/s one internal parallel unit streams at
                 units U              internal parallel units (channels x dies)
                 queue_depth Q        host queue: at most Q requests outstanding
                 link_bandwidth lb    bytes/s of the host interface, shared by all units
                 page_bytes           reads cover whole pages: [a, b) -> [floor(a/p)p, ceil(b/p)p)
                 max_request_bytes    longer runs are split into requests of at most this size
                 random_penalty R     extra latency of a request that does not start where the
                                      previous one ended (default 0)
                 host_overhead h      host time to submit one request (driver, syscall), spent
                                      one request after another (default 0)

    a batch of n requests, sizes s_i (already page-rounded), in issue order:
        P = min(U, Q)                                   effective parallelism
        host        the host submits requests one by one, h each, while fewer than Q are
                    outstanding (a slot frees when a request leaves its unit); h = 0 and Q large
                    leave only the units and the link
        unit time   t_i = L (+ R unless sequential) + s_i / ub
        units       work-conserving, FIFO: request i starts on the unit that frees first (ties:
                    the lowest unit), once submitted and once the requests before it have started
        arrival     a_i = completion of i on its unit
        link        one FIFO server, x_i = s_i / lb, served in order of a (ties: issue order)
                    d_i = max(d_{i-1}, a_i) + x_i
                        = C_i + max_{k<=i} (a_k - C_{k-1}),  C = cumsum(x) over that order
        batch time  = d of the last request served

With equal request sizes the units simply take requests in turn (request i on unit i mod P); with
mixed sizes, a unit that finishes a short request takes the next one, as a device's dies do.
``batch_time`` evaluates this with a compiled loop over the requests (P unit clocks) and
``np.maximum.accumulate`` for the link; ``fine_time`` runs every request as its own SimPy process
over a P-slot unit resource and one link resource, as a check on the batch formula.
``iops``/``bandwidth`` give the steady state of a long stream of equal requests:
``min(P / (L + s/ub), lb / s, 1 / h, Q / (h + L + s/ub))`` requests/s.

Sizes passed to the timing functions are bytes per request as issued (the layout step rounds them
to pages with :func:`page_round` / :func:`extents_to_requests`); the timing functions do not round.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.jit import njit

from .requests import Requests, extents_to_requests

INF = math.inf



@njit
def unit_done_times(t, P, h=0.0, Q=1 << 30):
    """Completion time of each request on the units. The host submits requests one by one, ``h``
    seconds each, while fewer than ``Q`` are outstanding (a slot frees when a request leaves its
    unit); a submitted request starts, FIFO, on the unit that frees first."""
    n = t.shape[0]
    done = np.empty(n)
    if h == 0.0 and P >= n:
        for i in range(n):
            done[i] = t[i]
        return done
    P = min(P, n)
    clock = np.zeros(P)
    slots = [0.0]
    slots.pop()
    host_free = 0.0
    for i in range(n):
        submit = host_free
        if len(slots) >= Q:
            submit = max(submit, heapq.heappop(slots))
        host_free = submit + h
        u = 0
        for k in range(1, P):
            if clock[k] < clock[u]:
                u = k
        clock[u] = max(clock[u], host_free) + t[i]
        done[i] = clock[u]
        heapq.heappush(slots, done[i])
    return done


@njit
def link_done_last(done, x):
    """Completion of the last link transfer: FIFO in order of unit completion (ties: issue order)."""
    order = np.argsort(done, kind="mergesort")
    d = 0.0
    for r in range(order.shape[0]):
        k = order[r]
        d = max(d, done[k]) + x[k]
    return d


def _slots(device_qd: float, queue_depth: float | None) -> int:
    """Outstanding-request slots as an int for the kernels (unbounded -> a large number)."""
    q = min(device_qd, INF if queue_depth is None else queue_depth)
    return int(min(q, 1 << 30))


# --------------------------------------------------------------------------- the model
def _check(name: str, value: Any, *, zero_ok: bool = False, inf_ok: bool = False, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DipsimError(f"flash model: {name} must be a number, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise DipsimError(f"flash model: {name} must be a number, got nan")
    if math.isinf(v):
        if v > 0 and inf_ok:
            return INF
        raise DipsimError(f"flash model: {name} must be finite, got {value!r}")
    if v < 0 or (v == 0 and not zero_ok):
        raise DipsimError(f"flash model: {name} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")
    if integer and v != int(v):
        raise DipsimError(f"flash model: {name} must be a whole number, got {value!r}")
    return v


@dataclass(frozen=True)
class FlashModel:
    """The flash timing model; build one from a profile with :meth:`from_spec` or ``spec.model()``."""

    latency: float
    unit_bandwidth: float
    units: float
    queue_depth: float
    link_bandwidth: float
    page_bytes: float = 1
    max_request_bytes: float = INF
    random_penalty: float = 0.0
    host_overhead: float = 0.0
    name: str = ""

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "latency", _check("latency", self.latency, zero_ok=True))
        set_(self, "unit_bandwidth", _check("unit_bandwidth", self.unit_bandwidth, inf_ok=True))
        set_(self, "units", _check("units", self.units, inf_ok=True, integer=True))
        set_(self, "queue_depth", _check("queue_depth", self.queue_depth, inf_ok=True, integer=True))
        set_(self, "link_bandwidth", _check("link_bandwidth", self.link_bandwidth, inf_ok=True))
        set_(self, "page_bytes", _check("page_bytes", self.page_bytes, integer=True))
        set_(self, "max_request_bytes", _check("max_request_bytes", self.max_request_bytes, inf_ok=True, integer=True))
        set_(self, "random_penalty", _check("random_penalty", self.random_penalty, zero_ok=True))
        set_(self, "host_overhead", _check("host_overhead", self.host_overhead, zero_ok=True))
        if self.max_request_bytes < self.page_bytes:
            raise DipsimError(f"flash model: max_request_bytes ({self.max_request_bytes:g}) must be >= page_bytes "
                              f"({self.page_bytes:g})")
        if not math.isinf(self.max_request_bytes) and self.max_request_bytes % self.page_bytes:
            raise DipsimError(f"flash model: max_request_bytes ({self.max_request_bytes:g}) must be a multiple of "
                              f"page_bytes ({self.page_bytes:g})")

    @classmethod
    def from_spec(cls, spec) -> "FlashModel":
        """From a :class:`simulator.hardware.FlashSpec` (or anything with the same attributes)."""
        return cls(latency=spec.latency, unit_bandwidth=spec.unit_bandwidth, units=spec.units,
                   queue_depth=spec.queue_depth, link_bandwidth=spec.link_bandwidth, page_bytes=spec.page_bytes,
                   max_request_bytes=spec.max_request_bytes, random_penalty=getattr(spec, "random_penalty", 0.0),
                   host_overhead=getattr(spec, "host_overhead", 0.0),
                   name=getattr(spec, "name", ""))

    # ------------------------------------------------------------------ helpers
    def parallelism(self, queue_depth: float | None = None) -> float:
        """P = min(units, queue depth); a given queue depth is capped by the device's own."""
        qd = self.queue_depth
        if queue_depth is not None:
            qd = min(qd, _check("queue_depth", queue_depth, inf_ok=True, integer=True))
        return min(self.units, qd)

    def requests(self, starts, ends) -> Requests:
        """Extents -> page-aligned, coalesced, split requests with this device's page and max size."""
        return extents_to_requests(starts, ends, page_bytes=self.page_bytes, max_request_bytes=self.max_request_bytes)

    def _service(self, sizes, sequential_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.asarray(sizes, dtype=np.float64).ravel()
        if s.size and (np.any(s < 0) or not np.all(np.isfinite(s))):
            raise DipsimError("flash model: request sizes must be finite and >= 0 bytes")
        if s.size and s.max() > self.max_request_bytes:
            self._too_big(s.max())
        t = self.latency + s / self.unit_bandwidth
        if self.random_penalty:
            if sequential_mask is None:
                t = t + self.random_penalty
            else:
                m = np.asarray(sequential_mask, dtype=bool).ravel()
                if m.shape != s.shape:
                    raise DipsimError(f"flash model: sequential_mask has {m.size} entries for {s.size} requests")
                t = t + np.where(m, 0.0, self.random_penalty)
        x = s / self.link_bandwidth
        return s, t, x

    def _too_big(self, size: float) -> None:
        raise DipsimError(f"flash model: a request of {size:.0f} bytes exceeds max_request_bytes "
                          f"({self.max_request_bytes:.0f}); split reads with requests() / extents_to_requests()")

    # ------------------------------------------------------------------ batch (vectorized)
    def schedule(self, sizes, sequential_mask=None, queue_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-request times (seconds from the batch's start), in issue order: (unit done, link done)."""
        s, t, x = self._service(sizes, sequential_mask)
        n = s.size
        if n == 0:
            z = np.zeros(0)
            return z, z.copy()
        P = self.parallelism(queue_depth)
        unit_done = unit_done_times(t, int(min(P, n)), float(self.host_overhead), _slots(self.queue_depth, queue_depth))
        order = np.argsort(unit_done, kind="stable")
        a = unit_done[order]
        xs = x[order]
        C = np.cumsum(xs)
        C_prev = np.concatenate(([0.0], C[:-1]))
        d = C + np.maximum.accumulate(a - C_prev)
        link_done = np.empty(n)
        link_done[order] = d
        return unit_done, link_done

    def batch_time(self, sizes, sequential_mask=None, queue_depth: float | None = None) -> float:
        """Seconds until the last byte of the batch has crossed the link (0 for an empty batch)."""
        _, done = self.schedule(sizes, sequential_mask, queue_depth)
        return float(done.max()) if done.size else 0.0

    # ------------------------------------------------------------------ fine (one SimPy process per request)
    def fine_process(self, env, sizes, sequential_mask=None, queue_depth: float | None = None):
        """A SimPy process serving the batch request by request; its value is the batch time."""
        import simpy

        s, t, x = self._service(sizes, sequential_mask)
        n = s.size
        P = self.parallelism(queue_depth)
        units = simpy.Resource(env, capacity=max(int(min(P, n)), 1))  # FIFO: the first free unit
        link = simpy.Resource(env, capacity=1)
        slots = simpy.Resource(env, capacity=max(min(_slots(self.queue_depth, queue_depth), n), 1))
        host = simpy.Resource(env, capacity=1)
        t0 = env.now
        h = float(self.host_overhead)

        def one(i: int):
            with slots.request() as q:                  # at most Q requests outstanding
                yield q
                if h:
                    with host.request() as hr:          # submitted by the host, one by one
                        yield hr
                        yield env.timeout(h)
                with units.request() as r:
                    yield r
                    yield env.timeout(float(t[i]))
            with link.request() as r:
                yield r
                yield env.timeout(float(x[i]))

        procs = [env.process(one(i)) for i in range(n)]

        def batch():
            if procs:
                yield env.all_of(procs)
            return env.now - t0

        return env.process(batch())

    def fine_time(self, sizes, sequential_mask=None, queue_depth: float | None = None) -> float:
        """Batch time from the per-request SimPy simulation (a check on :meth:`batch_time`)."""
        import simpy

        env = simpy.Environment()
        p = self.fine_process(env, sizes, sequential_mask, queue_depth)
        env.run(until=p)
        return float(p.value)

    # ------------------------------------------------------------------ closed forms
    def unloaded_latency(self, size: float, sequential: bool = False) -> float:
        """One request on an idle device: host_overhead + latency (+ random_penalty) + size/unit_bw + size/link_bw."""
        size = _check("size", size, zero_ok=True)
        if size > self.max_request_bytes:
            self._too_big(size)
        pen = 0.0 if sequential else self.random_penalty
        return self.host_overhead + self.latency + pen + size / self.unit_bandwidth + size / self.link_bandwidth

    def _request_rate(self, size: float, queue_depth: float | None, sequential: bool) -> tuple[float, float]:
        """(checked size, requests/s the units, the host and the queue window allow, the link aside):
        min(P/u, 1/h, Q/(h+u)), see :meth:`iops`."""
        size = _check("size", size, zero_ok=True)
        if size > self.max_request_bytes:
            self._too_big(size)
        P = self.parallelism(queue_depth)
        Q = min(self.queue_depth, INF if queue_depth is None else queue_depth)
        u = self.latency + (0.0 if sequential else self.random_penalty) + size / self.unit_bandwidth
        h = self.host_overhead
        unit_rate = INF if u == 0 else P / u
        host_rate = INF if h == 0 else 1.0 / h
        window_rate = INF if h + u == 0 else Q / (h + u)   # Q outstanding, each taking h + u
        return size, min(unit_rate, host_rate, window_rate)

    def iops(self, size: float, queue_depth: float | None = None, sequential: bool = False) -> float:
        """Steady-state requests/s for a long stream of equal requests: min(P/u, 1/x, 1/h, Q/(h+u)).

        u = latency (+ random_penalty unless ``sequential``) + size/unit_bandwidth, x = size/link_bandwidth,
        h = host_overhead, Q = the queue depth, P = min(units, Q) (``queue_depth`` defaults to, and is
        capped by, the device's).
        """
        size, rate = self._request_rate(size, queue_depth, sequential)
        x = size / self.link_bandwidth
        return min(rate, INF if x == 0 else 1.0 / x)

    def bandwidth(self, size: float, queue_depth: float | None = None, sequential: bool = False) -> float:
        """Steady-state bytes/s for a long stream of equal requests: ``iops * size``, the link's
        bandwidth exactly when the link binds."""
        size, rate = self._request_rate(size, queue_depth, sequential)
        return 0.0 if size == 0 else min(rate * size, self.link_bandwidth)
