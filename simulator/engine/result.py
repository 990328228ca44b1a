"""What a run of the engine returns: per-token timings, the summary, and the figures beside them --
DRAM footprint, memory saved against holding the whole dense model in DRAM, speed-up against
streaming the whole dense MLP from flash (a secondary baseline: the speed-up a user means, over the
dense model on the same DRAM, needs a dense replay and is ``simulator.sweep.dense``'s), and the DIP
paper's bytes/bandwidth model on the same access log."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..devices import analytic


@dataclass
class EngineResult:
    """Per-token timings and the run's summary."""

    device: str
    mode: str
    latency: np.ndarray              # [T] seconds per token
    flash_time: np.ndarray           # [T] seconds the flash was busy
    dram_time: np.ndarray            # [T]
    compute_time: np.ndarray         # [T]
    stall_time: np.ndarray           # [T] waiting on flash while DRAM and compute are idle
    flash_bytes: np.ndarray          # [T] bytes read from flash (page-rounded requests)
    flash_requests: np.ndarray       # [T]
    dram_bytes: np.ndarray           # [T]
    energy: np.ndarray | None        # [T] joules (None without energy figures)
    warmup: int
    request_hist: dict[int, int]
    extra: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Per-token figures over the measured tokens (after warm-up), in the names and units of the
        metric table (``simulator.metrics``): seconds as ``_ms`` where named so, bytes otherwise."""
        sl = slice(self.warmup, None)
        lat = self.latency[sl]
        n_req = self.flash_requests[sl].sum()
        d: dict[str, Any] = {
            "device": self.device,
            "engine_mode": self.mode,
            "tokens_per_s": 1.0 / lat.mean() if lat.size and lat.mean() > 0 else math.inf,
            "latency_ms_mean": 1e3 * lat.mean(),
            "latency_ms_p50": 1e3 * float(np.percentile(lat, 50)),
            "latency_ms_p99": 1e3 * float(np.percentile(lat, 99)),
            "flash_read_bytes_per_token": float(self.flash_bytes[sl].mean()),
            "flash_requests_per_token": float(self.flash_requests[sl].mean()),
            "mean_request_bytes": float(self.flash_bytes[sl].sum() / n_req) if n_req else 0.0,
            "dram_read_bytes_per_token": float(self.dram_bytes[sl].mean()),
            "flash_ms_per_token": 1e3 * float(self.flash_time[sl].mean()),
            "dram_ms_per_token": 1e3 * float(self.dram_time[sl].mean()),
            "compute_ms_per_token": 1e3 * float(self.compute_time[sl].mean()),
            "stall_ms_per_token": 1e3 * float(self.stall_time[sl].mean()),
            "energy_mj_per_token": 1e3 * float(self.energy[sl].mean()) if self.energy is not None else None,
            "request_size_histogram": {str(k): v for k, v in sorted(self.request_hist.items())},
            "engine_events": self.events,
            "engine_seconds": self.seconds,
        }
        d.update(self.extra)
        return d


def footprint_and_baselines(log, lay, models, shape, t_attn, t_head, positions, miss_via_dram, result) -> dict:
    """DRAM footprint, memory saved against a dense model in DRAM, speed-up against streaming the
    dense MLP from flash, and the paper's analytic tokens/s for the same access log."""

    T, L = log.n_tokens, log.n_layers
    cache_bytes = sum(float((g.capacity * g.bytes_per_column).sum()) for g in log.groups.values())
    mlp_bytes = float(log.extra.get("mlp_bytes") or sum(g.n_columns * g.bytes_per_column for g in log.groups.values()) * L)
    kv_max = float(L * shape.kv_bytes(min(shape.context, T)))
    footprint = shape.static_weight_bytes + cache_bytes + kv_max
    dense_dram = shape.static_weight_bytes + mlp_bytes + kv_max
    # dense streaming: no mask to wait for, so the whole MLP can be read ahead as one stream of
    # maximum-size requests (the device's full queue busy) while attention and the matmuls run
    # from DRAM; a token takes the longer of the two
    fl = models.flash
    sizes = np.concatenate([lay.region_requests(g, int(fl.page_bytes), fl.max_request_bytes).sizes
                            for g in log.groups])
    stream = fl.batch_time(sizes, np.ones(len(sizes), dtype=bool))
    mlp_dc = float(np.mean(models.dram.read_time(mlp_bytes / max(L, 1))) * L) if miss_via_dram else 0.0
    dense_stream = max(stream, float(t_attn[log.warmup:].mean() * L + t_head + mlp_dc))
    sl = slice(log.warmup, None)
    lat = result.latency[sl].mean()
    # the paper's model, token by token: one (layer, matrix group) pair per masked linear layer
    hit = np.stack([g.hits[sl] * g.bytes_per_column for g in log.groups.values()], axis=2)     # [T', L, G]
    miss = np.stack([g.misses[sl] * g.bytes_per_column for g in log.groups.values()], axis=2)
    static_dram = shape.attn_bytes * L + shape.kv_bytes(positions[sl]) * L + shape.head_bytes   # [T']
    t_an = analytic.token_time(models.spec, hit, miss, static_dram_bytes=static_dram, layer_axes=(1, 2))
    t_an = float(np.mean(t_an))
    return {
        "dram_footprint_bytes": int(round(footprint)),
        "dram_cache_bytes": int(round(cache_bytes)),
        "static_dram_bytes": int(round(shape.static_weight_bytes + kv_max)),
        "fits_in_dram": (models.dram_capacity is None) or footprint <= models.dram_capacity,
        "memory_saved_bytes": int(round(dense_dram - footprint)),
        "memory_saved_fraction": (dense_dram - footprint) / dense_dram,
        "dense_stream_tokens_per_s": 1.0 / dense_stream,
        "speedup_vs_dense_stream": dense_stream / lat if lat > 0 else math.inf,
        "analytic_tokens_per_s": 1.0 / float(t_an) if float(t_an) > 0 else math.inf,
    }
