"""Calibrate the flash model on this machine's storage, and validate the engine against real reads.

Reads are direct (``O_DIRECT``: no page cache) and issued by a :class:`Host` that keeps exactly
``Q`` requests outstanding, FIFO in issue order: Linux native AIO from one thread where available
(:mod:`simulator._aio`; a few microseconds of host time per request), else ``Q`` threads each with
one ``preadv`` outstanding. Python threads cost tens of microseconds per wake-up on a 2-core
machine -- more than a 4 KiB read on a fast SSD -- and a thread per request made both the
calibration and the validation measure the host rather than the disk.

``calibrate`` reads a file at random page-aligned offsets, request sizes 4 KiB - 1 MiB and queue
depths 1 - 32, several passes over the grid in shuffled order keeping each point's median (a
shared disk drifts by tens of percent within seconds), and fits the flash model's parameters
(``latency``, ``unit_bandwidth``, ``link_bandwidth``, ``host_overhead`` -- the host's serial time
per request -- and ``units``) to the measured throughputs: for every unit count, Nelder-Mead on the
logarithms from several starts minimises the squared log error of ``FlashModel.bandwidth`` over
all points; the best unit count wins.

``validate`` replays a real configuration's miss stream, lays the MLP weights out in a file of the
same size (random bytes stand in for the weights), and for every stage issues its requests with
direct reads exactly as the engine assumes: in issue order, at most the profile's queue depth
outstanding, each slot refilled with the next request as soon as its read completes. It compares
the measured flash time per token with the engine's, in interleaved rounds (these machines' disks
are shared and noisy), and reports the median error and its spread over the rounds.
"""
from __future__ import annotations

import math
import mmap
import os
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import DipsimError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_SIZES = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB)
DEFAULT_DEPTHS = (1, 2, 4, 8, 16, 32)
ALIGN = 4096
MAX_LANES = 64          # threads validate may use to keep requests outstanding


# ------------------------------------------------------------------------------- direct reads
def ensure_file(path: Path, size: int, progress: bool = True) -> None:
    """Create (or extend) ``path`` to ``size`` bytes of random data, flushed to the device."""
    have = path.stat().st_size if path.exists() else 0
    if have >= size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=8 * MiB, dtype=np.uint8).tobytes()
    if progress:
        print(f"dipsim: writing {size / GiB:.2f} GiB of test data to {path}", file=sys.stderr, flush=True)
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.seek(have)
        left = size - have
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def open_direct(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT"))
    except AttributeError:
        raise DipsimError("direct I/O (O_DIRECT) is not available on this platform") from None
    except OSError as e:
        raise DipsimError(f"{path}: cannot open with O_DIRECT ({e.strerror}); the file system must support "
                          f"direct I/O (tmpfs does not)") from None


class Reader:
    """Per-thread aligned buffers over one O_DIRECT file descriptor."""

    def __init__(self, path: Path, max_request: int):
        self.fd = open_direct(path)
        self.max_request = max_request
        self._local = threading.local()

    def buf(self, n: int) -> memoryview:
        b = getattr(self._local, "buf", None)
        if b is None or len(b) < n:
            b = self._local.buf = mmap.mmap(-1, max(n, self.max_request))  # page-aligned
        return memoryview(b)[:n]

    def read(self, offset: int, size: int) -> None:
        got = os.preadv(self.fd, [self.buf(size)], offset)
        if got != size:
            raise DipsimError(f"short direct read: {got} of {size} bytes at {offset}")

    def close(self) -> None:
        os.close(self.fd)


IO_BACKENDS = ("auto", "aio", "threads")


class Host:
    """Issues direct reads with ``depth`` requests outstanding, FIFO in issue order.

    ``aio`` (Linux native AIO, :mod:`simulator._aio`): one thread submits and reaps, so the host cost
    per request is a few microseconds and the queue depth is exact. ``threads``: ``depth`` threads,
    each with one ``preadv`` outstanding (portable; waking a thread per request costs tens of
    microseconds on a small machine, which the fitted ``host_overhead`` then absorbs). ``auto``
    takes ``aio`` where it works.
    """

    def __init__(self, path: Path, max_request: int, depth: int, backend: str = "auto"):
        if backend not in IO_BACKENDS:
            raise DipsimError(f"--io must be one of {', '.join(IO_BACKENDS)}, got {backend!r}")
        from . import _aio

        self.depth = int(depth)
        self.reader = Reader(path, max_request)
        self.kind, self.ctx = "threads", None
        if backend != "threads":
            try:
                self.ctx = _aio.Context(self.depth, self.reader.fd, max_request)
                self.kind = "aio"
            except OSError as e:     # no native AIO here, fs.aio-max-nr reached, no memory for the buffers
                if backend == "aio":
                    self.reader.close()
                    raise DipsimError(f"--io aio: cannot set up {self.depth} asynchronous reads: "
                                      f"{e.strerror or e}") from None
        self.pool = ThreadPoolExecutor(max(self.depth - 1, 1)) if self.kind == "threads" else None

    def run(self, offsets, sizes, depth: int | None = None, until: float | None = None) -> int:
        """Read every request in order with at most ``depth`` outstanding (no new request after the
        ``time.perf_counter()`` value ``until``); returns how many were read."""
        q = min(self.depth if depth is None else int(depth), self.depth)
        if self.ctx is not None:
            try:
                return self.ctx.read_all(offsets, sizes, q, until)
            except OSError as e:
                raise DipsimError(f"direct read failed: {e.strerror or e}") from None
        n = len(sizes)
        if n == 0:
            return 0
        nxt = iter(range(n))
        lock = threading.Lock()
        counts = [0] * min(q, n)
        clock = time.perf_counter

        def lane(j: int) -> None:
            while True:
                if until is not None and clock() >= until:
                    return
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                self.reader.read(int(offsets[i]), int(sizes[i]))
                counts[j] += 1

        futs = [self.pool.submit(lane, j) for j in range(1, len(counts))]
        lane(0)
        for f in futs:
            f.result()
        return sum(counts)

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        if self.pool is not None:
            self.pool.shutdown()
        self.reader.close()


def measure_point(host: Host, file_size: int, size: int, depth: int, seconds: float, seed: int) -> dict[str, float]:
    """Random reads of ``size`` bytes, ``depth`` outstanding, for about ``seconds``."""
    rng = np.random.default_rng(seed)
    slots = (file_size - size) // ALIGN
    chunk = 20_000
    n = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop:
        offs = (rng.integers(0, slots, chunk) * ALIGN).tolist()
        n += host.run(offs, [size] * chunk, depth, until=stop)
    dt = time.perf_counter() - t0
    return {"size": size, "depth": depth, "requests": n, "seconds": dt, "iops": n / dt, "bandwidth": n * size / dt}


# ------------------------------------------------------------------------------- calibrate
def _nelder_mead(f, x0: np.ndarray, step: float = 0.5, iters: int = 400) -> tuple[np.ndarray, float]:
    """Minimise ``f`` from ``x0`` (a small, dependency-free Nelder-Mead)."""
    n = len(x0)
    pts = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        c = np.mean(pts[:-1], axis=0)
        xr = c + (c - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = c + 2 * (c - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = c + 0.5 * (pts[-1] - c)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [pts[0] + 0.5 * (p - pts[0]) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
        if max(vals) - min(vals) < 1e-10:
            break
    i = int(np.argmin(vals))
    return pts[i], vals[i]


def fit_flash(points: list[dict[str, float]], max_units: int = 32) -> dict[str, float]:
    """Flash model parameters that best reproduce measured (size, depth) throughputs.

    For every unit count 1..max_units, latency, unit bandwidth, link bandwidth and the host's
    per-request submission time are fitted (Nelder-Mead on their logarithms) to minimise the mean
    squared log error of the predicted throughput (``FlashModel.bandwidth``) over all points; the
    best unit count wins. Queue depth 1 gives the start values.
    """
    qd1 = [p for p in points if p["depth"] == 1]
    if len(qd1) < 2:
        raise DipsimError("calibration needs queue depth 1 at two request sizes at least")
    size = np.array([p["size"] for p in points], dtype=float)
    depth = np.array([p["depth"] for p in points], dtype=float)
    meas = np.log(np.array([p["bandwidth"] for p in points]))
    s1 = np.array([p["size"] for p in qd1], dtype=float)
    t1 = np.array([1.0 / p["iops"] for p in qd1])
    (lat0, inv0), *_ = np.linalg.lstsq(np.stack([np.ones_like(s1), s1], 1), t1, rcond=None)
    lat0 = max(float(lat0), 5e-6)
    ub0, lb0 = 1.0 / max(float(inv0), 1e-10), max(p["bandwidth"] for p in points)
    # several starts: the error surface has local minima (host-bound against unit-bound fits)
    starts = [np.log([lat0 * a, ub0, lb0, lat0 * b]) for a in (1.0, 0.5) for b in (0.1, 0.5, 1.0)]

    def model_bw(x, units):
        lat, ub, lb, h = np.exp(x)
        P = np.minimum(units, depth)
        u = lat + size / ub
        rate = np.minimum(np.minimum(P / u, lb / size), np.minimum(1.0 / h, depth / (h + u)))
        return np.log(rate * size)

    best = None
    for units in range(1, max_units + 1):
        for x0 in starts:
            x, score = _nelder_mead(lambda x: float(np.mean((model_bw(x, units) - meas) ** 2)), x0)
            if best is None or score < best[0] - 1e-12:
                best = (score, units, x)
    score, units, x = best
    lat, ub, lb, h = (float(v) for v in np.exp(x))
    errs = np.exp(model_bw(x, units) - meas) - 1
    return {"latency": lat, "unit_bandwidth": ub, "units": units, "queue_depth": int(depth.max()),
            "link_bandwidth": lb, "host_overhead": h, "rms_log_error": math.sqrt(score),
            "median_abs_error": float(np.median(np.abs(errs))), "max_abs_error": float(np.max(np.abs(errs)))}


def _model_bw(fit: dict[str, float], p: dict[str, float]) -> float:
    from .devices.flash import FlashModel

    fm = FlashModel(latency=fit["latency"], unit_bandwidth=fit["unit_bandwidth"], units=fit["units"],
                    queue_depth=fit["queue_depth"], link_bandwidth=fit["link_bandwidth"],
                    host_overhead=fit["host_overhead"])
    return fm.bandwidth(p["size"], p["depth"])


def calibrate(file: str | os.PathLike, out: str | os.PathLike, *, size: int = 1 * GiB, sizes=DEFAULT_SIZES,
              depths=DEFAULT_DEPTHS, seconds: float = 0.25, passes: int = 3, name: str | None = None,
              progress: bool = True, dram: str = "ddr5-6400", compute: str | None = "laptop-gpu",
              io: str = "auto") -> dict[str, Any]:
    """Measure, fit, and write a device profile whose flash part is this machine's storage.

    Every (size, depth) point is measured ``passes`` times for ``seconds`` each, the passes going
    over the grid in a different random order, and the median pass is kept: a shared disk's
    throughput drifts by tens of percent within seconds, and a single sweep over the grid would
    bake one slow moment into one corner of the fit."""
    from common.io import check_file

    path = Path(file)
    check_file(out, "calibrate output")
    if size < 64 * MiB:
        raise DipsimError(f"--size must be at least 64 MiB so that random reads leave the device's cache, got {size}")
    bad = [s for s in sizes if s % ALIGN or s <= 0]
    if bad:
        raise DipsimError(f"request sizes must be positive multiples of 4 KiB, got {bad[0]}")
    if any(d < 1 for d in depths):
        raise DipsimError(f"queue depths must be >= 1, got {list(depths)}")
    if 1 not in depths or len(set(sizes)) < 2:
        raise DipsimError(f"calibration needs queue depth 1 and two request sizes at least (the fit's latency and "
                          f"bandwidth come from them), got sizes {list(sizes)} and depths {list(depths)}")
    if passes < 1 or seconds <= 0:
        raise DipsimError(f"--passes must be >= 1 and --seconds > 0, got {passes} and {seconds:g}")
    ensure_file(path, size, progress)
    host = Host(path, max(sizes), max(depths), io)
    points = []
    try:
        grid = [(s, d) for s in sizes for d in depths]
        runs: dict[tuple[int, int], list[dict[str, float]]] = {g: [] for g in grid}
        order = random.Random(0)
        for k in range(passes):
            todo = list(grid)
            if k:
                order.shuffle(todo)
            for i, (s, d) in enumerate(todo):
                runs[(s, d)].append(measure_point(host, size, s, d, seconds, seed=k * len(grid) + i))
                if progress:
                    print(f"\r  pass {k + 1}/{passes}: {i + 1}/{len(grid)} points", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        for g in grid:
            rs = sorted(runs[g], key=lambda p: p["bandwidth"])
            p = dict(rs[len(rs) // 2])
            p["spread"] = (rs[-1]["bandwidth"] - rs[0]["bandwidth"]) / p["bandwidth"]
            points.append(p)
            if progress:
                print(f"  {g[0] // KiB:5d} KiB  QD{g[1]:<3d} {p['iops']:10.0f} IOPS  {p['bandwidth'] / 1e6:8.1f} MB/s  "
                      f"(spread over passes {p['spread']:.0%})", file=sys.stderr, flush=True)
    finally:
        host.close()
    fit = fit_flash(points)
    prof_name = name or Path(out).stem
    src = (f"dipsim calibrate on {os.uname().nodename} at {time.strftime('%Y-%m-%d %H:%M')}: O_DIRECT random "
           f"reads of {path} ({size / GiB:.2f} GiB), sizes {', '.join(f'{s // KiB} KiB' for s in sizes)}, queue "
           f"depths {', '.join(map(str, depths))}, {passes} passes of {seconds:g} s each, median pass; I/O: "
           f"{host.kind}")
    doc = {
        "name": prof_name,
        "kind": "device",
        "description": f"this machine's storage, measured by dipsim calibrate (fit: median |error| "
                       f"{fit['median_abs_error']:.0%}, max {fit['max_abs_error']:.0%} over the grid)",
        "source": src,
        "flash": {
            "name": f"{prof_name}-flash",
            "kind": "flash",
            "source": src,
            "latency": f"{fit['latency'] * 1e6:.2f} us",
            "unit_bandwidth": f"{fit['unit_bandwidth'] / 1e6:.2f} MB/s",
            "units": int(fit["units"]),
            "queue_depth": int(fit["queue_depth"]),
            "link_bandwidth": f"{fit['link_bandwidth'] / 1e6:.2f} MB/s",
            "host_overhead": f"{fit['host_overhead'] * 1e6:.3f} us",
            "page_bytes": "4 KiB",
            "max_request_bytes": f"{max(sizes) // KiB} KiB",
        },
        "dram": dram,
        "compute": compute,
        "dram_capacity": {"value": "16 GiB", "assumed": "not measured; only the flash part is calibrated"},
        "notes": "measured (size, queue depth: MB/s measured / model): " + "; ".join(
            f"{p['size'] // KiB} KiB QD{p['depth']}: {p['bandwidth'] / 1e6:.0f}/{_model_bw(fit, p) / 1e6:.0f}"
            for p in points),
    }
    from common.io import atomic

    from .hardware import load_device

    out = Path(out)
    with atomic(out) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
        load_device(tmp)  # the profile must load before it replaces anything
    return {"profile": str(out), "fit": fit, "points": points, "io": host.kind}


# ------------------------------------------------------------------------------- validate
def stage_requests(log, layout, flash) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """For every token, the (offsets, sizes) of each stage's requests in issue order (as the engine)."""
    L = log.n_layers
    ug = [g for g in log.groups if g != "down"]
    out = []
    for t in range(log.n_tokens):
        per_stage: list[tuple[list, list]] = [([], []) for _ in range(2 * L)]
        for s_i, names in enumerate((ug, ["down"])):
            for g in names:
                req = layout.requests(g, log.groups[g].missed_mask(t), int(flash.page_bytes), flash.max_request_bytes)
                starts = req.segment_starts(L)
                for layer in range(L):
                    a, b = starts[layer], starts[layer + 1]
                    per_stage[2 * layer + s_i][0].append(req.offsets[a:b])
                    per_stage[2 * layer + s_i][1].append(req.sizes[a:b])
        out.append([(np.concatenate(o) if o else np.zeros(0, np.int64), np.concatenate(z) if z else np.zeros(0, np.int64))
                    for o, z in per_stage])
    return out


def validate(trace, profile: str | os.PathLike, *, file: str | os.PathLike, rounds: int = 3, tokens: int = 32,
             progress: bool = True, layout_opts: dict | None = None, io: str = "auto", **replay_kw) -> dict[str, Any]:
    """Measured vs simulated flash seconds per token for one configuration (see module docstring)."""
    from .engine import device_models, simulate
    from .layout import Layout
    from .replay import replay

    if rounds < 1:
        raise DipsimError(f"--rounds must be >= 1, got {rounds}")
    models = device_models(profile)
    fl = models.flash
    if int(fl.page_bytes) % 512:
        raise DipsimError(f"{profile}: page_bytes {fl.page_bytes:g} is not a multiple of 512; direct reads need "
                          f"block-aligned requests")
    log = replay(trace, tokens=min(tokens, trace.n_tokens), **replay_kw)
    layout = Layout(log, **(layout_opts or {}))
    reqs = stage_requests(log, layout, fl)
    path = Path(file)
    size = -(-layout.total_bytes // ALIGN) * ALIGN + ALIGN
    ensure_file(path, size, progress)
    P = int(min(fl.queue_depth, MAX_LANES))   # outstanding requests the engine allows (Q)
    largest = max((int(z.max()) for st in reqs for _, z in st if len(z)), default=ALIGN)
    host = Host(path, largest, P, io)
    sl = slice(log.warmup, None)
    measured_rounds, simulated_rounds = [], []
    try:
        for r in range(rounds):
            res = simulate(log, models.spec, layout=layout)          # simulated, then measured: interleaved
            simulated_rounds.append(res.flash_time[sl].copy())
            meas = np.zeros(log.n_tokens)
            for t, stages in enumerate(reqs):
                t0 = time.perf_counter()
                for offsets, sizes in stages:
                    host.run(offsets, sizes, P)
                meas[t] = time.perf_counter() - t0
            measured_rounds.append(meas[sl])
            if progress:
                print(f"  round {r + 1}/{rounds}: measured {meas[sl].mean() * 1e3:.2f} ms/token, simulated "
                      f"{res.flash_time[sl].mean() * 1e3:.2f} ms/token", file=sys.stderr, flush=True)
    finally:
        host.close()
    meas = np.array(measured_rounds)    # [rounds, T']
    sim = np.array(simulated_rounds)
    err_tok = (sim.mean(axis=0) - np.median(meas, axis=0)) / np.median(meas, axis=0)
    round_err = [float(np.median((s - m) / m)) for s, m in zip(sim, meas)]
    return {
        "profile": str(profile),
        "file": str(path),
        "tokens": int(meas.shape[1]),
        "rounds": rounds,
        "parallelism": P,
        "io": host.kind,
        "requests_per_token": float(np.mean([sum(len(z) for _, z in st) for st in reqs[log.warmup:]])),
        "measured_s_per_token": float(np.median(meas.mean(axis=1))),
        "simulated_s_per_token": float(np.median(sim.mean(axis=1))),
        "median_error": float(np.median(np.abs(err_tok))),
        "median_signed_error": float(np.median(err_tok)),
        "round_median_errors": round_err,
        "measured_spread": float((meas.mean(axis=1).max() - meas.mean(axis=1).min()) / np.median(meas.mean(axis=1))),
        "config": log.config,
    }
