"""Measure this machine's storage with direct reads and fit the flash model to it."""
from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import DipsimError

from ..hardware.schema import FLASH_FIELDS
from .reads import (ALIGN, DEFAULT_DEPTHS, DEFAULT_SIZES, MAX_DEPTH, MAX_REQUEST, GiB, KiB, MiB, Host,
                    check_data_file, data_file, measure_point)


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


#: the fitted parameters, in the order of the fit's vector
FIT_FIELDS = ("latency", "unit_bandwidth", "link_bandwidth", "host_overhead")


def fit_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Log-space bounds of the fitted parameters: the profile schema's plausible ranges (a zero lower
    bound becomes 1 ns). A parameter the measurements cannot identify -- a unit bandwidth that never
    limits because the link or the latency always does -- would otherwise drift without end and give
    a profile the loader refuses (seen under load: 5e17 B/s); bounded, it stops at the edge."""
    lo = np.log([max(FLASH_FIELDS[f].lo, 1e-9) for f in FIT_FIELDS])
    hi = np.log([FLASH_FIELDS[f].hi for f in FIT_FIELDS])
    return lo, hi


def fit_flash(points: list[dict[str, float]], max_units: int = 32) -> dict[str, float]:
    """Flash model parameters that best reproduce measured (size, depth) throughputs.

    For every unit count 1..max_units, latency, unit bandwidth, link bandwidth and the host's
    per-request submission time are fitted (Nelder-Mead on their logarithms) to minimise the mean
    squared log error of the predicted throughput (``FlashModel.bandwidth``) over all points; the
    best unit count wins. Queue depth 1 gives the start values. Every parameter stays within the
    profile schema's plausible range (:func:`fit_bounds`), so the fit always makes a loadable profile.
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
    lo, hi = fit_bounds()
    starts = [np.clip(np.log([lat0 * a, ub0, lb0, lat0 * b]), lo, hi) for a in (1.0, 0.5) for b in (0.1, 0.5, 1.0)]

    def model_bw(x, units):
        lat, ub, lb, h = np.exp(np.clip(x, lo, hi))
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
    x = np.clip(x, lo, hi)
    lat, ub, lb, h = (float(v) for v in np.exp(x))
    errs = np.exp(model_bw(x, units) - meas) - 1
    return {"latency": lat, "unit_bandwidth": ub, "units": units, "queue_depth": int(depth.max()),
            "link_bandwidth": lb, "host_overhead": h, "rms_log_error": math.sqrt(score),
            "median_abs_error": float(np.median(np.abs(errs))), "max_abs_error": float(np.max(np.abs(errs)))}


def _model_bw(fit: dict[str, float], p: dict[str, float]) -> float:
    from ..devices.flash import FlashModel

    fm = FlashModel(latency=fit["latency"], unit_bandwidth=fit["unit_bandwidth"], units=fit["units"],
                    queue_depth=fit["queue_depth"], link_bandwidth=fit["link_bandwidth"],
                    host_overhead=fit["host_overhead"])
    return fm.bandwidth(p["size"], p["depth"])


def _check(size: int, sizes, depths, seconds: float, passes: int, name: str | None = None) -> None:
    if size < 64 * MiB:
        raise DipsimError(f"--size must be at least 64 MiB so that random reads leave the device's cache, got {size}")
    bad = [s for s in sizes if s % ALIGN or s <= 0]
    if bad:
        raise DipsimError(f"request sizes must be positive multiples of 4 KiB, got {bad[0]}")
    big = [s for s in sizes if s > min(MAX_REQUEST, size)]     # a 1 TiB request was an internal error (ENOMEM)
    if big:
        raise DipsimError(f"request sizes must be at most {min(MAX_REQUEST, size) // MiB} MiB (--size and "
                          f"{MAX_REQUEST // MiB} MiB), got {big[0] // KiB} KiB")
    if any(d < 1 or d > MAX_DEPTH for d in depths):
        raise DipsimError(f"queue depths must be in 1..{MAX_DEPTH}, got {list(depths)}")
    if name is not None and (not name.isprintable() or not name.strip() or len(name) > 100):
        raise DipsimError(f"--name must be one line of at most 100 printable characters, got {name!r}")
    if 1 not in depths or len(set(sizes)) < 2:
        raise DipsimError(f"calibration needs queue depth 1 and two request sizes at least (the fit's latency and "
                          f"bandwidth come from them), got sizes {list(sizes)} and depths {list(depths)}")
    if passes < 1 or not seconds > 0:
        raise DipsimError(f"--passes must be >= 1 and --seconds > 0, got {passes} and {seconds:g}")


def _measure(host: Host, size: int, sizes, depths, seconds: float, passes: int, progress: bool) -> list[dict]:
    """Every (size, depth) point, ``passes`` times in shuffled orders; each keeps its median pass."""
    from common.progress import progress_bar

    grid = [(s, d) for s in sizes for d in depths]
    runs: dict[tuple[int, int], list[dict[str, float]]] = {g: [] for g in grid}
    order = random.Random(0)
    with progress_bar(passes * len(grid), progress, "calibrate", unit="point") as bar:
        for k in range(passes):
            todo = list(grid)
            if k:
                order.shuffle(todo)
            bar.set_description(f"calibrate, pass {k + 1}/{passes}")
            for i, (s, d) in enumerate(todo):
                runs[(s, d)].append(measure_point(host, size, s, d, seconds, seed=k * len(grid) + i))
                bar.update(1)
    points = []
    for g in grid:
        rs = sorted(runs[g], key=lambda p: p["bandwidth"])
        p = dict(rs[len(rs) // 2])
        p["spread"] = (rs[-1]["bandwidth"] - rs[0]["bandwidth"]) / p["bandwidth"]
        points.append(p)
        if progress:
            print(f"  {g[0] // KiB:5d} KiB  QD{g[1]:<3d} {p['iops']:10.0f} IOPS  {p['bandwidth'] / 1e6:8.1f} MB/s  "
                  f"(spread over passes {p['spread']:.0%})", file=sys.stderr, flush=True)
    return points


def _profile(fit, points, name: str, src: str, sizes, dram: str, compute: str | None) -> dict[str, Any]:
    """The device profile: a flash part with the fitted figures, stock DRAM and compute parts."""
    return {
        "name": name,
        "kind": "device",
        "description": f"this machine's storage, measured by dipsim calibrate (fit: median |error| "
                       f"{fit['median_abs_error']:.0%}, max {fit['max_abs_error']:.0%} over the grid)",
        "source": src,
        "flash": {
            "name": f"{name}-flash",
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

    path = check_data_file(file)
    check_file(out, "calibrate output")
    _check(size, sizes, depths, seconds, passes, name)
    with data_file(path, size, progress):     # a data file made by this run goes again if it fails
        host = Host(path, max(sizes), max(depths), io)
        try:
            points = _measure(host, size, sizes, depths, seconds, passes, progress)
        finally:
            host.close()
        return _write(Path(out), points, path, size, sizes, depths, seconds, passes, name, host.kind, dram, compute)


def _write(out: Path, points, path, size, sizes, depths, seconds, passes, name, kind, dram, compute) -> dict[str, Any]:
    """Fit the measured points and write the device profile (it must load before it replaces anything)."""
    from common.io import atomic

    from ..hardware import load_device

    fit = fit_flash(points)
    src = (f"dipsim calibrate on {os.uname().nodename} at {time.strftime('%Y-%m-%d %H:%M')}: O_DIRECT random "
           f"reads of {path} ({size / GiB:.2f} GiB), sizes {', '.join(f'{s // KiB} KiB' for s in sizes)}, queue "
           f"depths {', '.join(map(str, depths))}, {passes} passes of {seconds:g} s each, median pass; I/O: "
           f"{kind}")
    doc = _profile(fit, points, name or out.stem, src, sizes, dram, compute)
    with atomic(out) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
        try:
            load_device(tmp)
        except DipsimError as e:      # name the output, not its temporary file
            raise DipsimError(f"{out}: the fitted profile is implausible ({str(e).split(': ', 1)[-1]}); measure "
                              f"longer (--seconds, --passes) or on a quieter machine") from None
    return {"profile": str(out), "fit": fit, "points": points, "io": kind}
