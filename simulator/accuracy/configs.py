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

from traces.errors import DipsimError

from .. import allocation as alloc_mod
from .. import caches as caches_mod
from .. import masking as masking_mod
from ..masking.base import policy_params
from ..methods.apply import check as method_files
from ..methods.apply import label_suffix
from ..registry import check_params
from ..replay import bytes_per_weight

#: configuration keys besides the masking policy's own parameters (gamma, fixed_top_n, seed, ...)
CONFIG_KEYS = ("masking", "keep", "keep_up", "keep_gate", "keep_down", "cache", "cache_params", "allocation",
               "allocation_params", "dram_fraction", "dram_bytes", "weight_format", "label",
               "variant", "variant_id", "adapter", "adapter_id")   # the last four: simulator.methods files
DEFAULT_CONFIG = {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru", "dram_fraction": 0.5,
                  "allocation": "uniform"}


def jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _check_keep(value: Any, what: str, where: str) -> Any:
    if value is None:
        return None
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise DipsimError(f"{where}: {what} must be a number in (0, 1] or a list of them, got {value!r}") from None
    if arr.ndim != 1 or arr.size == 0 or not np.all((arr > 0) & (arr <= 1)):
        raise DipsimError(f"{where}: {what} must be in (0, 1], got {value!r}")
    return float(arr[0]) if np.ndim(value) == 0 else [float(v) for v in arr]


def normalize_config(cfg: Any, where: str = "config") -> dict[str, Any]:
    """Check one configuration without touching a model; return it with every default filled in.

    Keys: ``masking`` (default dip), the masking policy's parameters (``gamma``, ``fixed_top_n``,
    ``seed``), ``keep`` / ``keep_up`` / ``keep_gate`` / ``keep_down``, ``cache`` (default lru),
    ``cache_params``, ``allocation`` (default uniform), ``allocation_params``, ``dram_fraction``
    (default 0.5) or ``dram_bytes``, ``weight_format``, ``label``.
    """
    if not isinstance(cfg, dict):
        raise DipsimError(f"{where}: a configuration is a mapping like {{'masking': 'dip-ca', 'gamma': 0.2}}, "
                          f"got {type(cfg).__name__}")
    cfg = dict(cfg)
    name = cfg.pop("masking", "dip")
    try:
        cls = masking_mod.REGISTRY.get_class(name)
        cache = cfg.get("cache", "lru")
        cache_cls = caches_mod.REGISTRY.get_class(cache)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    mfields = policy_params(cls)
    unknown = sorted(k for k in cfg if k not in CONFIG_KEYS and k not in mfields)
    if unknown:
        raise DipsimError(f"{where}: unknown key {unknown[0]!r} for masking {name!r}; allowed: "
                          f"{', '.join(list(CONFIG_KEYS) + mfields)}")
    mparams = {k: cfg.pop(k) for k in mfields if k in cfg}
    try:
        policy = masking_mod.make(name, **mparams)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    if cache_cls.offline:
        raise DipsimError(f"{cache} needs the future; it cannot run in the closed loop "
                          f"(use it in open-loop replay with cache-oblivious masking)")
    cache_params = dict(cfg.get("cache_params") or {})
    try:
        check_params("cache policy", cache, cache_params, [p for p in caches_mod.policy_params(cache) if p != "future"])
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    allocation = cfg.get("allocation", "uniform")
    if allocation not in alloc_mod.SCHEMES:
        raise DipsimError(f"{where}: unknown allocation {allocation!r}; allowed: {', '.join(alloc_mod.SCHEMES)}")
    frac, nbytes = cfg.get("dram_fraction"), cfg.get("dram_bytes")
    if frac is not None and nbytes is not None:
        raise DipsimError(f"{where}: give the DRAM budget as dram_fraction or dram_bytes, not both")
    if nbytes is None:
        frac = 0.5 if frac is None else frac
        try:
            frac = float(frac)
        except (TypeError, ValueError):
            raise DipsimError(f"{where}: dram_fraction must be a number in [0, 1], got {frac!r}") from None
        if not 0.0 <= frac <= 1.0:
            raise DipsimError(f"{where}: dram_fraction must be in [0, 1] (share of the MLP weights cached in DRAM), "
                              f"got {frac}")
    else:
        try:
            nbytes = float(nbytes)
        except (TypeError, ValueError):
            raise DipsimError(f"{where}: dram_bytes must be a number of bytes, got {nbytes!r}") from None
        if not nbytes >= 0:
            raise DipsimError(f"{where}: dram_bytes must be >= 0, got {nbytes}")
    wf = cfg.get("weight_format")
    try:
        bytes_per_weight({"bytes_per_weight": 1.0}, wf)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    out: dict[str, Any] = {"masking": name, **jsonable(policy.params())}
    for k in ("keep", "keep_up", "keep_gate", "keep_down"):
        value = cfg.get(k)
        default = 1.0 if name == "dense" else 0.5          # dense keeps every column whatever keep says
        out[k] = _check_keep(default if k == "keep" and value is None else value, k, where)
    out.update(cache=cache, cache_params=jsonable(cache_params), allocation=allocation,
               allocation_params=jsonable(dict(cfg.get("allocation_params") or {})),
               dram_fraction=frac, dram_bytes=nbytes, weight_format=wf if wf is not None else "source")
    out.update(method_files(cfg, where))   # pruned-weight variant / LoRA adapter files, with their ids
    out["label"] = str(cfg["label"]) if cfg.get("label") is not None else config_label(out)
    return out


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


def replay_kwargs(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(masking policy object, the keyword arguments replay/prepare take) of a normalized config."""
    mparams = {k: cfg[k] for k in policy_params(masking_mod.REGISTRY.get_class(cfg["masking"])) if k in cfg}
    if "thresholds" in mparams and mparams["thresholds"] is not None:
        mparams["thresholds"] = tuple(mparams["thresholds"])
    policy = masking_mod.make(cfg["masking"], **mparams)
    kw = {k: cfg[k] for k in ("keep", "keep_up", "keep_gate", "keep_down", "dram_fraction", "dram_bytes")}
    kw["weight_format"] = None if cfg["weight_format"] == "source" else cfg["weight_format"]
    kw["cache_params"] = dict(cfg["cache_params"])
    kw["allocation_params"] = dict(cfg["allocation_params"])
    return policy, kw


def check_run_args(tokens: Any, prefill: Any, warmup: Any, calib_tokens: Any) -> tuple[int, int, int, int]:
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
    if not 0 <= warmup < tokens - prefill:
        raise DipsimError(f"warmup must be in 0..{tokens - prefill - 1} (the decoded tokens minus one), got {warmup}")
    if calib_tokens <= 0:
        raise DipsimError(f"calib_tokens must be > 0, got {calib_tokens}")
    return tokens, prefill, warmup, calib_tokens
