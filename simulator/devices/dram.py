"""DRAM model: a bandwidth, a small access latency, an optional energy per byte.

    read_time(b) = latency + b / (bandwidth * efficiency)      (0 for b == 0)
    energy(b)    = b * read_energy_per_byte

``bandwidth`` is the peak (bus width x transfer rate) and ``efficiency`` the share of it that
streaming reads sustain (1 unless a profile says otherwise). The engine serializes DRAM reads of
one stage into one call; contention between DRAM users is the engine's business.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.errors import DipsimError


@dataclass(frozen=True)
class DramModel:
    bandwidth: float
    latency: float = 0.0
    efficiency: float = 1.0
    read_energy_per_byte: float | None = None
    name: str = ""

    def __post_init__(self):
        if not (self.bandwidth > 0):
            raise DipsimError(f"dram model: bandwidth must be > 0 bytes/s, got {self.bandwidth!r}")
        if not (self.latency >= 0) or math.isinf(self.latency):
            raise DipsimError(f"dram model: latency must be finite and >= 0 s, got {self.latency!r}")
        if not (0 < self.efficiency <= 1):
            raise DipsimError(f"dram model: efficiency must be in (0, 1], got {self.efficiency!r}")
        if self.read_energy_per_byte is not None and not (self.read_energy_per_byte >= 0):
            raise DipsimError(f"dram model: read_energy_per_byte must be >= 0, got {self.read_energy_per_byte!r}")

    @classmethod
    def from_spec(cls, spec) -> "DramModel":
        return cls(bandwidth=spec.bandwidth, latency=spec.latency, efficiency=spec.efficiency,
                   read_energy_per_byte=spec.read_energy_per_byte, name=spec.name)

    @property
    def effective_bandwidth(self) -> float:
        """Sustained bytes/s: bandwidth x efficiency."""
        return self.bandwidth * self.efficiency

    def read_time(self, nbytes):
        """Seconds to read ``nbytes`` (scalar or array); 0 bytes take no time."""
        b = np.asarray(nbytes, dtype=np.float64)
        if np.any(b < 0) or not np.all(np.isfinite(b)):
            raise DipsimError("dram model: byte counts must be finite and >= 0")
        t = np.where(b > 0, self.latency + b / self.effective_bandwidth, 0.0)
        return float(t) if t.ndim == 0 else t

    def energy(self, nbytes):
        """Joules to read ``nbytes``; None when the profile has no energy figure."""
        if self.read_energy_per_byte is None:
            return None
        e = np.asarray(nbytes, dtype=np.float64) * self.read_energy_per_byte
        return float(e) if e.ndim == 0 else e
