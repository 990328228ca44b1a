"""The dense baseline of a point: the speed-up a user means is against the dense model on the same
DRAM, not against streaming the whole MLP from flash every token.

A point's baseline is the point with every column kept -- masking ``dense``, no masking parameters,
no pruned ``variant`` and no LoRA ``adapter`` -- and everything else unchanged: the trace (and its
``tokens``, ``warmup``, ``calib_tokens``), the device, the cache budget *as the point gives it*
(the same ``dram_fraction`` of the MLP, the same ``dram_bytes``, or what the same device leaves for
the dense model), the cache policy and its parameters, the allocation, the declared weight format,
the layout and the engine options -- except the placement of a neuron group (``layout.neurons``): the
dense model reads its up/gate and down columns, never a neuron group, so bundled and separate neuron
layouts share one baseline (the dense model's run is the same either way). Its figures join the
point's row:

    dense_tokens_per_s             the baseline's tokens/s
    speedup_vs_dense               tokens_per_s / dense_tokens_per_s (a dense point: exactly 1)
    dense_dram_footprint_bytes     the baseline's DRAM footprint
    memory_saved_vs_dense_fraction 1 - dram_footprint_bytes / dense_dram_footprint_bytes
    dense_mlp_in_dram              the baseline reads no MLP weights from flash after warm-up (its
                                   cache holds the whole MLP, so the comparison is with a model
                                   that never touches flash)

Many points share one baseline (a gamma axis, a keep axis, every policy at one budget): it is keyed
by :func:`baseline_key`, run once per process (``execute.dense_baseline``) and, in a sweep, once per
results folder (:class:`BaselineStore`, ``OUT/dense/<key>.json``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

from common.io import atomic_write

from .. import plugins
from ..config import LayoutConfig, PointConfig

#: the figures a point's row carries about its dense baseline (names of the metric table)
DENSE_METRICS = ("dense_tokens_per_s", "speedup_vs_dense", "dense_dram_footprint_bytes",
                 "memory_saved_vs_dense_fraction", "dense_mlp_in_dram")
#: what a dense run hands its points (``dense_figures``)
FIGURES = ("dense_tokens_per_s", "dense_dram_footprint_bytes", "dense_mlp_in_dram")
_DENSE_REPLAY = {"masking": "dense", "masking_params": {}, "keep": 1.0, "keep_up": None, "keep_gate": None,
                 "keep_down": None}


def dense_point(cfg: PointConfig) -> PointConfig:
    """The point's dense baseline (see the module docstring): every column kept, the plain model."""
    replay = dataclasses.replace(cfg.replay, **_DENSE_REPLAY)
    layout = dataclasses.replace(cfg.layout, neurons=LayoutConfig.neurons)
    return dataclasses.replace(cfg, replay=replay, layout=layout, accuracy=False, accuracy_tokens=None,
                               variant=None, adapter=None)


def is_own_baseline(cfg: PointConfig) -> bool:
    """Whether the point is its own dense baseline (the dense model itself: its keep is ignored)."""
    return cfg.replay.masking == "dense" and not cfg.variant and not cfg.adapter


def baseline_key(cfg: PointConfig, trace_path: str | Path) -> str:
    """What identifies a point's baseline: the trace, the dense replay, device, engine and layout."""
    d = dense_point(cfg)
    blob = json.dumps(_described(d, trace_path), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _described(d: PointConfig, trace_path: str | Path) -> dict[str, Any]:
    out = {"trace": str(trace_path), "device": d.device, "replay": d.replay.to_mapping(),
           "engine": d.engine.to_mapping(), "layout": d.layout.to_mapping()}
    source = plugins.source_key(d.replay)    # a plugin cache or allocation: its source hash
    return {**out, "plugins": source} if source else out


def dense_figures(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """What a dense run's metrics (``prefix``: ``"m."`` for a sweep row) give its points."""
    return {"dense_tokens_per_s": float(metrics[f"{prefix}tokens_per_s"]),
            "dense_dram_footprint_bytes": int(metrics[f"{prefix}dram_footprint_bytes"]),
            "dense_mlp_in_dram": float(metrics[f"{prefix}flash_bytes_per_token"]) == 0.0}


def versus_dense(metrics: Mapping[str, Any], dense: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A run's figures against its dense baseline's (``dense_figures``), under the metric table's names."""
    tps, base = float(metrics[f"{prefix}tokens_per_s"]), dense["dense_tokens_per_s"]
    fp, base_fp = float(metrics[f"{prefix}dram_footprint_bytes"]), dense["dense_dram_footprint_bytes"]
    speedup = tps / base if base > 0 and math.isfinite(base) else (1.0 if tps == base else math.nan)
    return {"dense_tokens_per_s": base, "speedup_vs_dense": speedup,
            "dense_dram_footprint_bytes": base_fp,
            "memory_saved_vs_dense_fraction": (base_fp - fp) / base_fp if base_fp > 0 else 0.0,
            "dense_mlp_in_dram": bool(dense["dense_mlp_in_dram"])}


class BaselineStore:
    """A sweep's dense baselines, one JSON file each in ``OUT/dense/`` (written atomically as each
    finishes), so that a rerun or a resumed sweep runs none of them again."""

    def __init__(self, out: str | Path):
        self.dir = Path(out) / "dense"

    def read(self) -> dict[str, dict[str, Any]]:
        """Every stored baseline's figures by key (a damaged file is skipped: that baseline reruns)."""
        found = {}
        for f in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else ():
            try:
                data = json.loads(f.read_text())
                found[data["key"]] = {k: data["figures"][k] for k in FIGURES}
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def write(self, key: str, cfg: PointConfig, trace_path: str | Path, figures: Mapping[str, Any]) -> None:
        what = _described(dense_point(cfg), trace_path)
        atomic_write(self.dir / f"{key}.json", json.dumps({"key": key, "baseline": what, "figures": dict(figures)},
                                                          indent=1, sort_keys=True, default=str).encode())
