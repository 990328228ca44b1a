"""The DRAM a device leaves for the cache of MLP columns.

When a run names a device but neither ``dram_fraction`` nor ``dram_bytes``, the cache gets what the
device actually leaves once everything else that must stay resident is placed::

    cache budget = dram_capacity x usable_dram_fraction      (what the OS leaves the app)
                 - static weights                            (attention, embedding, LM head)
                 - KV cache at the context length            (every layer, keys and values)
                 - runtime_reserve                           (the runtime's own buffers and code)

clamped at zero (a model whose static part does not fit streams every MLP column). Each term is a
number with its source: the device profile's ``dram_capacity``, ``usable_dram_fraction`` and
``runtime_reserve`` (sourced or assumed there), the model's static weights and KV geometry from
the trace's metadata (``ModelShape``). So an 8 GB and a 12 GB phone give different answers for a
model that does not fit, which a budget given as a fraction of the MLP cannot show.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import ReplayConfig
from .shape import ModelShape, device_models

#: how a run's cache budget was decided (the ``cache_budget_from`` metric)
BUDGET_SOURCES = ("dram_fraction", "dram_bytes", "device", "default")


@dataclass(frozen=True)
class DeviceBudget:
    """The terms of a device's cache budget for one model, in bytes."""

    device: str
    usable_bytes: int
    static_weight_bytes: float
    kv_cache_bytes: float
    runtime_reserve: int

    @property
    def cache_bytes(self) -> int:
        left = self.usable_bytes - self.static_weight_bytes - self.kv_cache_bytes - self.runtime_reserve
        return int(max(left, 0.0))

    def explain(self) -> str:
        gib = 2.0 ** 30
        return (f"{self.device}: {self.usable_bytes / gib:.2f} GiB usable - {self.static_weight_bytes / gib:.2f} static "
                f"weights - {self.kv_cache_bytes / gib:.2f} KV cache - {self.runtime_reserve / gib:.2f} runtime reserve "
                f"= {self.cache_bytes / gib:.2f} GiB for the cache")


def device_budget(device: Any, meta: dict[str, Any]) -> DeviceBudget:
    """The budget terms of ``device`` (a name, YAML path or Device) for the model of trace ``meta``."""
    spec = device_models(device).spec
    shape = ModelShape.from_meta(meta)
    kv = float(shape.kv_bytes(shape.context)) * shape.n_layers
    return DeviceBudget(spec.name, int(spec.usable_dram_bytes), float(shape.static_weight_bytes), kv,
                        int(getattr(spec, "runtime_reserve", 0)))


def budget_source(cfg: ReplayConfig, device: Any) -> str:
    """Which rule decides the run's cache budget (one of ``BUDGET_SOURCES``)."""
    if cfg.dram_fraction is not None:
        return "dram_fraction"
    if cfg.dram_bytes is not None:
        return "dram_bytes"
    return "device" if device is not None else "default"


def with_device_budget(cfg: ReplayConfig, device: Any, meta: dict[str, Any]) -> ReplayConfig:
    """``cfg`` with ``dram_bytes`` set to what the device leaves, when the run gives neither
    ``dram_fraction`` nor ``dram_bytes`` and names a device; otherwise ``cfg`` unchanged."""
    if budget_source(cfg, device) != "device":
        return cfg
    return dataclasses.replace(cfg, dram_bytes=device_budget(device, meta).cache_bytes)
