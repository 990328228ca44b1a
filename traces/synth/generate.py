"""Generate a trace from the fitted model (``model.py``), streamed to disk a window at a time.

Each (layer, group) has its own random stream (SFC64 seeded by ``(seed, layer, group)``), drawn in
token order, and carries its AR state from one window to the next: the result depends on the seed
only, not on the window size, the number of threads or whether it goes to a file or to memory.
Column parameters come from a second stream per (layer, group), so they do not depend on the
number of tokens either: a 64-token trace is the first 64 tokens of a 1024-token one.

The per-value work (two AR updates, the shape table, exp) runs in one compiled loop; numpy draws
the normals (its ziggurat is ~4x faster than numba's generator here). Layers are spread over
threads: both the loop and numpy's fills release the GIL.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.progress import progress_bar
from ..format import Trace
from ..writer import TraceWriter
from ._kernel import MANTISSA, advance
from .copula import FOLD_STEP, fold_knots
from .model import Fit, GroupParams
from .stats import N_SIG_BINS, Z_LEVELS, normal_scores

#: log-magnitudes are clipped to this range (the layer median is at 0): float16 holds e^-16.6 .. e^11.09
LOG_RANGE = (-16.0, 11.0)
GROUP_IDS = {"x": 0, "h": 1}


def column_params(gp: GroupParams, layer: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``mu[n]``, ``sig[n]`` of one layer's columns: medians from the quantile function at stratified
    levels (so the n columns follow it closely), spreads from the rank-binned log-normal."""
    perm = rng.permutation(n)
    z = normal_scores(n)[perm].astype(float)
    mu = _interp_extrap(z, Z_LEVELS, gp.mu[layer])
    centres = (np.arange(N_SIG_BINS) + 0.5) / N_SIG_BINS
    u = (perm + 0.5) / n
    spread = np.interp(u, centres, gp.lsig_sd[layer])
    lsig = np.interp(u, centres, gp.lsig_mean[layer]) + spread * rng.standard_normal(n)
    return mu.astype(np.float32), np.exp(lsig).astype(np.float32)


def _interp_extrap(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise linear through (xp, fp), continued linearly beyond both ends."""
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def process_coefficients(phi1: float, phi2: float, w1: float, w2: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Kernel coefficients of z = u + sqrt(w2) y2, and how to start u in its stationary law.

    The fast AR(1) plus white noise (variance W = 1 - w2, autocorrelation w1 phi1^lag) is the
    ARMA(1,1) u[t] = phi1 u[t-1] + c (e[t] + theta e[t-1]) with the same autocovariance: one normal
    per value instead of two. theta is the invertible root of
    (phi1 - r) theta^2 + (1 + phi1^2 - 2 r phi1) theta + (phi1 - r) = 0, r = w1 phi1 / W its lag-1
    autocorrelation. Returns ``coef`` for the kernel and ``(a, b)``: u[-1] = a e[-1] + b xi.
    """
    W = max(1.0 - w2, 1e-12)
    r = w1 * phi1 / W
    if abs(phi1 - r) < 1e-12:
        theta = 0.0
    else:
        bq = 1 + phi1 * phi1 - 2 * r * phi1
        theta = (-bq + math.sqrt(max(bq * bq - 4 * (phi1 - r) ** 2, 0.0))) / (2 * (phi1 - r))
    c = math.sqrt(W * (1 - phi1 * phi1) / (1 + 2 * phi1 * theta + theta * theta))
    coef = np.array([phi1, c, theta, phi2, math.sqrt(1 - phi2 * phi2), math.sqrt(max(w2, 0.0))], dtype=np.float32)
    return coef, (c, math.sqrt(max(W - c * c, 0.0)))


class _Stream:
    """One (layer, group): its columns, random stream and AR state."""

    def __init__(self, gp: GroupParams, layer: int, n: int, seed: int, gid: int):
        self.n = n
        self.rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, layer, gid, 0])))
        prng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, layer, gid, 1])))
        self.mu, self.sig = column_params(gp, layer, n, prng)
        self.coef, init = process_coefficients(*(float(v) for v in gp.ar[layer]))
        self.knots = fold_knots(Z_LEVELS, gp.shape[layer])
        e0 = self.rng.standard_normal((3, n), dtype=np.float32)     # a stationary start
        self.state = np.stack([init[0] * e0[0] + init[1] * e0[1], e0[0], e0[2]]).astype(np.float32)

    def next(self, out: np.ndarray, noise: np.ndarray) -> None:
        """The next ``out.shape[0]`` tokens into ``out [w, n]`` (float16); ``noise`` is scratch space."""
        w = out.shape[0]
        eps = noise[: w * 2 * self.n].reshape(w, 2, self.n)
        self.rng.standard_normal(out=eps, dtype=np.float32)
        advance(eps, self.state, self.mu, self.sig, self.knots, 0.0, FOLD_STEP, self.coef, LOG_RANGE[0],
                LOG_RANGE[1], MANTISSA, out.view(np.uint16))


class Generator:
    """Token windows of a synthetic trace, every layer: ``next_into(xs, hs)`` fills
    ``xs [L, w, d_model]`` and ``hs [L, w, d_ff]`` (float16) with the next ``w`` tokens."""

    def __init__(self, params: dict[str, GroupParams], n_layers: int, d_model: int, d_ff: int, seed: int = 0,
                 threads: int = 2):
        if "x" not in params or "h" not in params:
            raise DipsimError("the fit has no statistics of h (GLU outputs); refit from traces captured with h")
        widths = {"x": d_model, "h": d_ff}
        self.n_layers, self.d_model, self.d_ff = n_layers, d_model, d_ff
        self.streams = {kind: [_Stream(params[kind], layer, widths[kind], seed, GROUP_IDS[kind])
                               for layer in range(n_layers)] for kind in ("x", "h")}
        self.threads = max(1, min(int(threads), 2 * n_layers))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._local = threading.local()     # one noise buffer per thread, not per stream

    def _noise(self, size: int) -> np.ndarray:
        buf = getattr(self._local, "noise", None)
        if buf is None or buf.size < size:
            buf = self._local.noise = np.empty(size, dtype=np.float32)
        return buf

    def next_into(self, xs: np.ndarray, hs: np.ndarray) -> None:
        w = xs.shape[1]
        size = w * 2 * max(self.d_model, self.d_ff)
        jobs = [(s, xs[i]) for i, s in enumerate(self.streams["x"])] + \
               [(s, hs[i]) for i, s in enumerate(self.streams["h"])]
        jobs.sort(key=lambda j: -j[0].n)    # widest first: the threads finish together

        def run(job) -> None:
            job[0].next(job[1], self._noise(size))

        if self._pool is None:
            for job in jobs:
                run(job)
        else:
            list(self._pool.map(run, jobs))

    def next(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        xs = np.empty((self.n_layers, w, self.d_model), dtype=np.float16)
        hs = np.empty((self.n_layers, w, self.d_ff), dtype=np.float16)
        self.next_into(xs, hs)
        return xs, hs

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def generate_trace(fit: Fit, n_layers: int, d_model: int, d_ff: int, n_tokens: int, *, seed: int = 0,
                   meta: dict[str, Any] | None = None, window: int = 64, threads: int = 2) -> Trace:
    """An in-memory synthetic trace (tests, validation): the same values as :func:`write_trace`."""
    _check_dims(n_layers, d_model, d_ff, n_tokens)
    gen = Generator(fit.layer_params(n_layers), n_layers, d_model, d_ff, seed, threads)
    xs = np.empty((n_layers, n_tokens, d_model), dtype=np.float16)
    hs = np.empty((n_layers, n_tokens, d_ff), dtype=np.float16)
    try:
        for t0 in range(0, n_tokens, window):
            t1 = min(t0 + window, n_tokens)
            gen.next_into(xs[:, t0:t1], hs[:, t0:t1])
    finally:
        gen.close()
    return Trace.from_arrays(xs, hs, dict(meta or {}, d_ff=d_ff))


def write_trace(path: str | Path, fit: Fit, n_layers: int, d_model: int, d_ff: int, n_tokens: int, *,
                seed: int = 0, meta: dict[str, Any] | None = None, window: int = 64, threads: int = 2,
                progress: bool = False) -> Path:
    """Generate and write a trace window by window; the file appears only when complete.

    A window is written by a second thread while the next one is generated (memory: two windows
    of every layer, ~240 MB for a 14B-class geometry at 64 tokens).
    """
    _check_dims(n_layers, d_model, d_ff, n_tokens)
    # the writer checks the size and the disk before anything is generated; from the next line on, an
    # error or interrupt removes its unfinished file (the bar and the write thread are made inside:
    # a Ctrl-C as the bar appeared left the temporary file behind)
    writer = TraceWriter(path, dict(meta or {}), n_layers=n_layers, d_model=d_model, d_ff=d_ff, n_tokens=n_tokens)
    gen = bar = io = pending = None
    try:
        with writer:
            try:
                gen = Generator(fit.layer_params(n_layers), n_layers, d_model, d_ff, seed, threads)
                bar = progress_bar(n_tokens, progress, "synth")
                io = ThreadPoolExecutor(1)
                for t0 in range(0, n_tokens, window):
                    xs, hs = gen.next(min(window, n_tokens - t0))
                    if pending is not None:
                        pending.result()
                    pending = io.submit(writer.write, t0, xs, hs)
                    bar.update(xs.shape[1])
                pending.result()
                pending = None
                return writer.commit()
            finally:
                try:
                    if pending is not None:     # let the write finish before the file is removed
                        pending.exception()
                finally:                        # (a second Ctrl-C here still waits for the thread)
                    if io is not None:
                        io.shutdown()
    finally:
        if bar is not None:
            bar.close()
        if gen is not None:
            gen.close()


def _check_dims(n_layers: int, d_model: int, d_ff: int, n_tokens: int) -> None:
    for name, v in (("n_layers", n_layers), ("d_model", d_model), ("d_ff", d_ff), ("tokens", n_tokens)):
        if not isinstance(v, (int, np.integer)) or v <= 0:
            raise DipsimError(f"{name} must be a positive integer, got {v!r}")


