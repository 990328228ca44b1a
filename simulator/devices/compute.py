"""Compute model: peak dense throughput times an efficiency factor.

    time(flops) = flops / (peak[dtype] * efficiency)

``fp16`` uses the profile's dense fp16 FLOP/s; ``int8`` its dense int8 OP/s (an error when the
profile has none). Decoding one token is a matrix-vector product per weight matrix, so the engine
passes 2 x (weights touched) FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import DipsimError

DTYPES = ("fp16", "int8")


@dataclass(frozen=True)
class ComputeModel:
    fp16_flops: float
    int8_ops: float | None = None
    efficiency: float = 1.0
    name: str = ""

    def __post_init__(self):
        if not (self.fp16_flops > 0):
            raise DipsimError(f"compute model: fp16_flops must be > 0, got {self.fp16_flops!r}")
        if self.int8_ops is not None and not (self.int8_ops > 0):
            raise DipsimError(f"compute model: int8_ops must be > 0, got {self.int8_ops!r}")
        if not (0 < self.efficiency <= 1):
            raise DipsimError(f"compute model: efficiency must be in (0, 1], got {self.efficiency!r}")

    @classmethod
    def from_spec(cls, spec) -> "ComputeModel":
        return cls(fp16_flops=spec.fp16_flops, int8_ops=spec.int8_ops, efficiency=spec.efficiency, name=spec.name)

    def peak(self, dtype: str = "fp16") -> float:
        if dtype == "fp16":
            return self.fp16_flops
        if dtype == "int8":
            if self.int8_ops is None:
                raise DipsimError(f"compute profile {self.name or '(inline)'!r} has no int8_ops figure; "
                                  f"allowed dtypes here: fp16")
            return self.int8_ops
        raise DipsimError(f"unknown compute dtype {dtype!r}; allowed: {', '.join(DTYPES)}")

    def time(self, flops, dtype: str = "fp16"):
        """Seconds for ``flops`` operations (scalar or array) at peak x efficiency."""
        f = np.asarray(flops, dtype=np.float64)
        if np.any(f < 0) or not np.all(np.isfinite(f)):
            raise DipsimError("compute model: FLOP counts must be finite and >= 0")
        t = f / (self.peak(dtype) * self.efficiency)
        return float(t) if t.ndim == 0 else t
