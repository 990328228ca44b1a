"""Closed-loop configurations: checked and completed without a model, labelled, turned into replay's
arguments; and the run arguments (tokens, prefill, warm-up, calibration prefix).

A configuration is a mapping: ``masking`` (default dip), the masking policy's parameters
(``gamma``, ``fixed_top_n``, ``seed``), ``keep`` / ``keep_up`` / ``keep_gate`` / ``keep_down``,
``cache`` (default lru), ``cache_params``, ``allocation`` (default uniform), ``allocation_params``,
``dram_fraction`` (default 0.5) or ``dram_bytes``, ``weight_format``, ``label``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.jsonio import jsonable
from common.params import child, text

from .. import masking as masking_mod
from ..config import DEFAULT_DRAM_FRACTION, ReplayConfig
from ..masking.base import policy_params
from ..methods.apply import FILE_KEYS
from ..methods.apply import check as method_files
from ..methods.apply import label_suffix

#: the keys naming simulator.methods files (a pruned-weight variant, a LoRA adapter) and their ids
METHOD_KEYS = tuple(k for key in FILE_KEYS for k in (key, f"{key}_id"))


def normalize_config(cfg: Any, where: str = "config") -> dict[str, Any]:
    """Check one configuration without touching a model; return it with every default filled in, as
    the flat mapping of ``config.ReplayConfig`` (policy parameters beside the rest) plus ``label``.

    A ``dense`` configuration keeps every column whatever ``keep`` says, so its keep reads 1.0;
    without a budget the cache holds half the MLP (``dram_fraction`` 0.5). Offline cache policies
    (belady) are refused: they need the future, which the closed loop makes as it goes.
    """
    if not isinstance(cfg, dict):
        raise DipsimError(f"{where}: a configuration is a mapping like {{'masking': 'dip-ca', 'gamma': 0.2}}, "
                          f"got {type(cfg).__name__}")
    cfg = dict(cfg)
    label = cfg.pop("label", None)
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)                  # label: 2024 reads as a number in YAML
    label = text()(label, child(where, "label"))
    files = {k: cfg.pop(k) for k in METHOD_KEYS if k in cfg}
    if cfg.get("masking", "dip") == "dense" and "keep" not in cfg:
        cfg["keep"] = 1.0
    rc = ReplayConfig.from_flat(cfg, where).check(where)
    if rc.offline_cache:
        raise DipsimError(f"{rc.cache} needs the future; it cannot run in the closed loop "
                          f"(use it in open-loop replay with cache-oblivious masking)")
    if rc.dram_fraction is None and rc.dram_bytes is None:
        rc = dataclasses.replace(rc, dram_fraction=DEFAULT_DRAM_FRACTION)
    out = jsonable(rc.flat())
    out.update(method_files(files, where))   # pruned-weight variant / LoRA adapter files, with their ids
    out["label"] = str(label) if label is not None else config_label(out)
    return out


def replay_config(cfg: dict[str, Any]) -> ReplayConfig:
    """The replay configuration of a normalized configuration."""
    return ReplayConfig.from_flat({k: v for k, v in cfg.items() if k != "label" and k not in METHOD_KEYS})


def config_label(cfg: dict[str, Any]) -> str:
    """A short readable name: ``dip-ca(gamma=0.2) keep=0.5 lru dram=0.5``."""
    name = cfg["masking"]
    cls = masking_mod.REGISTRY.get_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in policy_params(cls)}
    shown = {k: cfg[k] for k in defaults if k in cfg and (k == "gamma" or cfg[k] != defaults[k])}
    text = name + ("(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")
    if cls.prunes:
        keeps = [f"{k}={cfg[k]}" for k in ("keep", "keep_up", "keep_gate", "keep_down") if cfg.get(k) is not None]
        text += " " + " ".join(keeps)
    text += f" {cfg['cache']}"
    if cfg["cache"] != "none":
        text += f" dram={cfg['dram_fraction']}" if cfg.get("dram_bytes") is None else f" dram={cfg['dram_bytes']:.4g}B"
    if cfg["allocation"] != "uniform":
        text += f" {cfg['allocation']}"
    if cfg.get("weight_format", "source") != "source":
        text += f" {cfg['weight_format']}"
    return text + label_suffix(cfg)


def check_run_args(tokens: Any, prefill: Any, warmup: Any, calib_tokens: Any,
                   prefix: int | None = None) -> tuple[int, int, int, int]:
    """The run arguments as whole numbers in range; ``prefix``: the resolved prefix token, which
    decides how many of the ``tokens`` are decoded (``traces.prefix.dense_positions``)."""
    from traces.prefix import dense_positions

    def as_int(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise DipsimError(f"{what} must be an integer, got {v!r}")
        return int(v)

    tokens, prefill = as_int(tokens, "tokens"), as_int(prefill, "prefill")
    warmup, calib_tokens = as_int(warmup, "warmup"), as_int(calib_tokens, "calib_tokens")
    if tokens < 2:
        raise DipsimError(f"tokens must be >= 2, got {tokens}")
    if not 0 <= prefill <= tokens - 2:
        raise DipsimError(f"prefill must be in 0..{tokens - 2} (tokens - 2), got {prefill}")
    decoded = tokens + (prefix is not None) - dense_positions(prefix, prefill)
    if not 0 <= warmup < decoded:
        raise DipsimError(f"warmup must be in 0..{decoded - 1} (the decoded tokens minus one), got {warmup}")
    if calib_tokens <= 0:
        raise DipsimError(f"calib_tokens must be > 0, got {calib_tokens}")
    return tokens, prefill, warmup, calib_tokens
