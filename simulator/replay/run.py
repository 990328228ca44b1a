"""Replay, layer by layer: each layer's masking policy and cache run through all tokens at once.

Layers never interact (every layer has its own caches, and a trace holds every layer's inputs), so
replay takes one layer at a time through the whole sequence: the layer's scores ``[T, N]`` are
read once, ``policy.run_layer`` picks the masks (vectorized for cache-oblivious policies, in one
compiled loop with the cache for cache-aware ones) and the cache steps through them in a compiled
loop. The result is token for token what selecting and stepping all layers per token gives; layers
are spread over threads (the kernels release the GIL). The closed loop (``simulator.accuracy``)
drives the same :class:`GroupRun` objects with the live model's activations.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.progress import progress_bar
from traces.format import Trace

from .. import caches as caches_mod
from ..kernels import step_outcomes
from .. import masking as masking_mod
from .log import AccessLog, GroupLog
from ..config import ReplayConfig
from .setup import Group, ReplaySetup, bytes_per_weight, calibration, prepare


@dataclass
class GroupRun:
    """One matrix group's policy and caches over ``T`` tokens, and what they did per token and layer."""

    group: Group
    policy: masking_mod.MaskingPolicy
    cache: caches_mod.CachePolicy
    k: np.ndarray            # [L] columns kept per token
    capacity: np.ndarray     # [L] columns of cache
    selected: np.ndarray     # [T, L] int32
    hits: np.ndarray         # [T, L] int32
    missed_bits: np.ndarray | None  # [T, L, ceil(N / 8)] uint8; None: not recorded (counts only)

    def run_layer(self, layer: int, scores: np.ndarray | None, start: int = 0, n: int | None = None,
                  cache: caches_mod.CachePolicy | None = None) -> np.ndarray:
        """Masks ``[n, N]`` of ``layer`` for the ``n`` tokens from ``start`` on (``scores [n, N]``,
        ignored by a group that is not pruned; ``n`` defaults to the rest of the ``T`` tokens), the
        cache stepped through them -- continuing from where its last call on this layer left it --
        and the outcome recorded. ``cache``: step this cache instead of the run's own (a fresh one
        per question, when the closed loop resets it)."""
        N = self.group.n_columns
        cache = self.cache if cache is None else cache
        if self.group.pruned:
            masks, hits = self.policy.run_layer(layer, scores, int(self.k[layer]), cache)
        else:
            masks = np.ones((self.selected.shape[0] - start if n is None else n, N), dtype=bool)
            hits = cache.run_layer(layer, masks)
        rows = slice(start, start + masks.shape[0])
        if self.missed_bits is None:
            self.selected[rows, layer] = np.count_nonzero(masks, axis=1)
            self.hits[rows, layer] = np.count_nonzero(hits, axis=1)
        else:
            step_outcomes(masks, hits, self.selected[rows, layer], self.hits[rows, layer], self.missed_bits[rows, layer])
        return masks

    def log(self) -> GroupLog:
        g = self.group
        bits = self.missed_bits if self.missed_bits is not None else np.zeros(self.selected.shape + (0,), np.uint8)
        return GroupLog(g.name, g.n_columns, g.bytes_per_column, self.capacity, self.k, self.selected, self.hits, bits,
                        g.parts)


def new_cache(setup: ReplaySetup, group: Group, n_layers: int,
              calib: dict[str, np.ndarray] | None = None) -> caches_mod.CachePolicy:
    """A fresh cache of ``group`` over ``n_layers`` layers, primed with the policy's hot scores of the
    calibration prefix (what ``pinned`` pins the top of: the mean score, or PowerInfer's activation
    frequency)."""
    c = caches_mod.make(setup.cache_name, n_layers=n_layers, n_columns=group.n_columns,
                        capacity=setup.capacities[group.name], **setup.cache_params)
    if calib is not None and group.name in calib:
        c.prime(setup.policies[group.name].hot_scores(calib[group.name], group.k()))
    return c


def group_runs(setup: ReplaySetup, n_layers: int, n_tokens: int,
               calib: dict[str, np.ndarray] | None = None, *, missed: bool = True) -> list[GroupRun]:
    """Fresh caches and empty records for every group of ``setup`` (``missed``: record which columns
    each token read from flash, what the engine needs; without it only the counts)."""
    runs = []
    for g in setup.groups:
        bits = np.zeros((n_tokens, n_layers, (g.n_columns + 7) // 8), np.uint8) if missed else None
        # each group gets its own copy of the policy (a random policy: its own generators)
        runs.append(GroupRun(g, setup.policies[g.name].rows(0, n_layers), new_cache(setup, g, n_layers, calib), g.k(),
                             setup.capacities[g.name], np.zeros((n_tokens, n_layers), np.int32),
                             np.zeros((n_tokens, n_layers), np.int32), bits))
    return runs


def access_log(runs: list[GroupRun], config: dict[str, Any], meta: dict[str, Any], warmup: int, seconds: float,
               mlp_bytes: float) -> AccessLog:
    return AccessLog(config, meta, int(warmup), {r.group.name: r.log() for r in runs}, seconds,
                     {"mlp_bytes": mlp_bytes})


def replay_config(masking: Any = "dip", cache: str | None = None, allocation: str | None = None,
                  **params: Any) -> ReplayConfig:
    """The checked configuration of a ``replay`` call: ``masking`` is a policy name, a policy object
    (its parameters come along) or a whole ``ReplayConfig`` (then nothing else may be given)."""
    if isinstance(masking, ReplayConfig):
        if cache is not None or allocation is not None or params:
            raise DipsimError("give either a ReplayConfig or the parameters, not both")
        return masking.check("replay")
    flat = dict(params)
    if isinstance(masking, masking_mod.MaskingPolicy):
        overlap = sorted(set(flat) & set(masking.params()))
        if overlap:
            raise DipsimError(f"give {overlap[0]} either in the policy object or as an argument, not both")
        flat.update(masking.params())
        masking = masking.name
    flat.update(masking=masking, **{k: v for k, v in (("cache", cache), ("allocation", allocation)) if v is not None})
    return ReplayConfig.from_flat(flat, "replay").check("replay")


def replay(trace: Trace, masking: Any = "dip", cache: str | None = None, allocation: str | None = None, *,
           progress: bool = False, threads: int | None = None, **params: Any) -> AccessLog:
    """Replay a masking policy with a cache per layer and group over ``trace``; see the module doc.

    The configuration is ``simulator.config.ReplayConfig``: a ``ReplayConfig``, or its fields as
    keyword arguments with the masking policy's own parameters beside them (``gamma=0.2``). Every
    value is checked before any work; errors are one line. ``threads`` spreads the layers over
    that many threads (default: 2 for models whose columns per token make it pay, else 1); results
    do not depend on it.
    """
    t_start = time.perf_counter()
    cfg = replay_config(masking, cache, allocation, **params)
    T = trace.n_tokens if cfg.tokens is None else cfg.tokens
    if not T <= trace.n_tokens:
        raise DipsimError(f"tokens must be in 1..{trace.n_tokens} (the trace's length), got {cfg.tokens}")
    if not cfg.warmup < T:
        raise DipsimError(f"warmup must be in 0..{T - 1} tokens for a {T}-token replay, got {cfg.warmup}; lower "
                          f"warmup or replay more tokens")
    meta = dict(trace.meta)
    calib = calibration(trace, meta, cfg)
    setup = prepare(meta, cfg, calib)
    L = trace.n_layers
    runs = group_runs(setup, L, T, calib)
    # a look-ahead predictor scores its group from the previous layer's x, not the group's own activations
    ahead = [r.group.pruned and r.policy.score_source(r.group.kind) == "prev_x" for r in runs]
    kinds = sorted({r.group.kind for r, a in zip(runs, ahead) if r.group.pruned and not a})

    def one_layer(layer: int) -> None:
        scores = {kind: trace.abs_layer(kind, layer, 0, T) for kind in kinds}   # only what some group uses
        prev = np.asarray(trace.x(max(layer - 1, 0))[:T], np.float32) if any(ahead) else None
        for r, a in zip(runs, ahead):
            r.run_layer(layer, r.policy.scores_from(layer, r.group.kind, prev) if a else scores.get(r.group.kind))

    n_threads = _threads(L, threads, sum(g.n_columns for g in setup.groups) * L)
    bar = progress_bar(L, progress, f"replay {cfg.masking}+{cfg.cache}", unit="layer")
    try:
        if n_threads == 1:
            for layer in range(L):
                one_layer(layer)
                bar.update(1)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                for _ in pool.map(one_layer, range(L)):
                    bar.update(1)
    finally:
        bar.close()
    config = {**cfg.flat(), "dram_bytes": setup.budget_bytes, "bytes_per_weight": bytes_per_weight(meta, cfg.weight_format),
              "tokens": T}
    if calib is None:     # calib_tokens played no part
        config["calib_tokens"] = None
    return access_log(runs, config, meta, cfg.warmup, time.perf_counter() - t_start, setup.mlp_bytes)


def _threads(L: int, threads: int | None, columns_per_token: int) -> int:
    if threads is None:
        threads = min(2, os.cpu_count() or 1) if columns_per_token >= 200_000 else 1
    return max(1, min(int(threads), L))
