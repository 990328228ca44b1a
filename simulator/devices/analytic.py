"""The DIP paper's analytic throughput model (bytes / bandwidth), for comparison with the engine.

Per token (Federici et al., MLSys 2025, arXiv 2412.01380, section on the throughput model)::

    T       = T_fixed + T_dyn
    T_fixed = static DRAM bytes / DRAM bw  +  streamed static bytes / flash bw
    T_dyn   = sum over masked layers of  combine(missed bytes / flash bw, hit bytes / DRAM bw)
    combine = max   when DRAM reads and flash I/O run concurrently (``concurrent=True``), else +

No compute term; flash is one constant bandwidth with no request size, latency or page effect.
A "masked layer" is one (layer, matrix group) pair: pass hit and miss bytes as arrays whose last
axes enumerate them (e.g. ``[L, G]``, or ``[T, L, G]`` with ``layer_axes=(1, 2)`` for per-token times).

The bandwidths come from a device: DRAM is ``bandwidth x efficiency``; flash is the device model's
steady sequential bandwidth at its largest request (1 MiB when requests are unbounded) and full
queue -- for the ``paper-a18`` device exactly its 1 GB/s. Both can be given directly instead.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from common.errors import DipsimError

from .flash import FlashModel

MiB = 1 << 20


def analytic_bandwidths(device: Any) -> tuple[float, float]:
    """(DRAM bytes/s, flash bytes/s) that the analytic model uses for ``device``."""
    dram_bw = float(device.dram.bandwidth) * float(getattr(device.dram, "efficiency", 1.0))
    fm = FlashModel.from_spec(device.flash)
    size = fm.max_request_bytes if not math.isinf(fm.max_request_bytes) else MiB
    flash_bw = fm.bandwidth(size, sequential=True)
    return dram_bw, flash_bw


def _resolve(device, dram_bandwidth, flash_bandwidth) -> tuple[float, float]:
    if device is not None:
        d, f = analytic_bandwidths(device)
    else:
        d = f = None
    d = d if dram_bandwidth is None else float(dram_bandwidth)
    f = f if flash_bandwidth is None else float(flash_bandwidth)
    if d is None or f is None:
        raise DipsimError("analytic model: give a device or both dram_bandwidth and flash_bandwidth")
    if not (d > 0 and f > 0):
        raise DipsimError(f"analytic model: bandwidths must be > 0, got DRAM {d!r}, flash {f!r}")
    return d, f


def _bytes(name: str, v) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise DipsimError(f"analytic model: {name} must be finite and >= 0")
    return a


def token_time_breakdown(device: Any = None, hit_bytes=0.0, miss_bytes=0.0, *, static_dram_bytes=0.0,
                         streamed_static_bytes=0.0, concurrent: bool = True, layer_axes=None,
                         dram_bandwidth: float | None = None, flash_bandwidth: float | None = None) -> dict[str, Any]:
    """Seconds per token split into ``fixed``, ``dynamic`` and ``total`` (floats, or arrays over the
    axes not in ``layer_axes``; ``layer_axes=None`` sums over every axis)."""
    dbw, fbw = _resolve(device, dram_bandwidth, flash_bandwidth)
    hit = _bytes("hit_bytes", hit_bytes)
    miss = _bytes("miss_bytes", miss_bytes)
    try:
        hit, miss = np.broadcast_arrays(hit, miss)
    except ValueError:
        raise DipsimError(f"analytic model: hit_bytes {hit.shape} and miss_bytes {miss.shape} do not match") from None
    per_layer = np.maximum(miss / fbw, hit / dbw) if concurrent else miss / fbw + hit / dbw
    dyn = per_layer.sum(axis=layer_axes)
    fixed = _bytes("static_dram_bytes", static_dram_bytes) / dbw + _bytes("streamed_static_bytes", streamed_static_bytes) / fbw
    total = fixed + dyn

    def out(v):
        v = np.asarray(v, dtype=np.float64)
        return float(v) if v.ndim == 0 else v

    return {"fixed": out(fixed), "dynamic": out(dyn), "total": out(total),
            "dram_bandwidth": dbw, "flash_bandwidth": fbw, "concurrent": bool(concurrent)}


def token_time(device: Any = None, hit_bytes=0.0, miss_bytes=0.0, **kw):
    """Seconds per token of the paper's model (see :func:`token_time_breakdown` for the arguments)."""
    return token_time_breakdown(device, hit_bytes, miss_bytes, **kw)["total"]


def token_energy(device: Any, hit_bytes=0.0, miss_bytes=0.0, *, static_dram_bytes=0.0, streamed_static_bytes=0.0,
                 layer_axes=None):
    """Joules per token for the reads: DRAM bytes (static + hits) x DRAM energy/byte plus flash bytes
    (streamed static + misses) x flash energy/byte. None when either profile lacks an energy figure.
    Writes of missed columns into the DRAM cache are not counted."""
    e_dram = getattr(device.dram, "read_energy_per_byte", None)
    e_flash = getattr(device.flash, "read_energy_per_byte", None)
    if e_dram is None or e_flash is None:
        return None
    hit = _bytes("hit_bytes", hit_bytes).sum(axis=layer_axes)
    miss = _bytes("miss_bytes", miss_bytes).sum(axis=layer_axes)
    e = (_bytes("static_dram_bytes", static_dram_bytes) + hit) * e_dram \
        + (_bytes("streamed_static_bytes", streamed_static_bytes) + miss) * e_flash
    e = np.asarray(e, dtype=np.float64)
    return float(e) if e.ndim == 0 else e
