"""Discrete-event simulation of decoding: flash, DRAM and compute per token and layer (SimPy).

    res = simulate(log, "phone-12gb-ufs40")        # an AccessLog from replay, a device profile
    res.summary()                                  # tokens/s, p50/p99 latency, flash requests, ...

Per token, layer after layer, with the real data dependencies of DIP (no predictor: a mask is
known only when its input is):

    attention      attention weights + KV cache from DRAM, compute            (roofline)
    up/gate stage  mask known -> missed columns from flash  |  cached columns from DRAM + compute
                   -> the missed columns, once landed, from DRAM + compute
    down stage     mask known (GLU output) -> the same for W_down
    (after the last layer: the LM head)

Resources: one flash device (a batch of requests per stage; its time from the vectorized queue
model of ``devices.flash``, or every request as its own SimPy event with ``mode="fine"``), one DRAM
channel and one compute unit. Compute streams its weights from DRAM, so a compute step holds both
for max(bytes / DRAM bandwidth, FLOPs / compute rate). ``overlap_io``: the cached path runs while
flash reads are in flight (else after them); ``overlap_compute``: cached columns are computed
before the missed ones land (else all compute waits for the flash). ``miss_via_dram``: landed
columns are read from DRAM by the compute (unified memory), as on a phone.

``analytic`` (the DIP paper's bytes/bandwidth model) is computed beside every run.

``shape`` (the model's static parts, the device's models), ``flash_stages`` (requests and batch
times), ``core`` (the ``Engine`` and its loop), ``result`` (summary and baselines).
"""
from __future__ import annotations

import os
import time
from typing import Any

from common.errors import DipsimError

from ..config import EngineConfig, LayoutConfig
from ..layout import Layout
from ..replay import AccessLog
from .core import Engine
from .result import EngineResult
from .shape import ModelShape, Models, device_models

__all__ = ["Engine", "EngineResult", "ModelShape", "Models", "device_models", "simulate"]


def simulate(log: AccessLog, device: Any, *, layout: dict[str, Any] | LayoutConfig | Layout | None = None,
             engine: dict[str, Any] | EngineConfig | None = None, chrome_trace: str | os.PathLike | None = None,
             chrome_tokens: int = 3, **options: Any) -> EngineResult:
    """Time every token of ``log`` on ``device`` (a profile name, a YAML path or a loaded Device).

    ``engine``: an ``EngineConfig`` or its fields as a mapping, or its fields as keyword arguments
    (``mode="fine"``, ``overlap_io=False``, ...): see ``simulator.config.EngineConfig``. ``layout``:
    a ``LayoutConfig``, a mapping of its fields, or a built ``Layout``. ``chrome_trace``: write a
    chrome://tracing timeline of the first ``chrome_tokens`` tokens.

    ``prefetch``: a stage whose masks do not depend on the token's activations (dense groups, such
    as up/gate under glu-prune or everything under dense masking, and static masking) need not wait
    for them: its flash reads are issued together when the token starts, as one deep-queue batch in
    the background, and the token ends when both its dependent chain and that batch (plus the
    dependent stages' own flash time, since they share the device) are done."""
    t_start = time.perf_counter()
    if isinstance(engine, EngineConfig):
        if options:
            raise DipsimError("give the engine options either as an EngineConfig or as arguments, not both")
        cfg = engine
    else:
        cfg = EngineConfig.from_mapping({**(engine or {}), **options}, "engine")
    lay = Layout.of(log, layout)
    models = device_models(device)
    result = Engine(log, models, ModelShape.from_meta(log.trace_meta), lay, cfg, chrome_trace=chrome_trace,
                    chrome_tokens=chrome_tokens).run()
    result.seconds = time.perf_counter() - t_start
    return result
