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
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from traces.errors import DipsimError
from traces.format import Trace

from .. import caches as caches_mod
from .. import masking as masking_mod
from .log import AccessLog, GroupLog
from .setup import Group, ReplaySetup, bytes_per_weight, calibration_scores, make_groups, make_policy, prepare


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
    missed_bits: np.ndarray  # [T, L, ceil(N / 8)] uint8

    def run_layer(self, layer: int, scores: np.ndarray | None) -> np.ndarray:
        """Masks ``[T, N]`` of ``layer`` for all ``T`` tokens (``scores [T, N]``, ignored by a group
        that is not pruned), the cache stepped through them and the outcome recorded."""
        T, N = self.selected.shape[0], self.group.n_columns
        if self.group.pruned:
            masks, hits = self.policy.run_layer(layer, scores, int(self.k[layer]), self.cache)
        else:
            masks = np.ones((T, N), dtype=bool)
            hits = self.cache.run_layer(layer, masks)
        self.selected[:, layer] = np.count_nonzero(masks, axis=1)
        self.hits[:, layer] = np.count_nonzero(hits, axis=1)
        self.missed_bits[:, layer] = np.packbits(masks & ~hits, axis=1)
        return masks

    def log(self) -> GroupLog:
        g = self.group
        return GroupLog(g.name, g.n_columns, g.bytes_per_column, self.capacity, self.k, self.selected, self.hits,
                        self.missed_bits)


def group_runs(setup: ReplaySetup, n_layers: int, n_tokens: int,
               calib: dict[str, np.ndarray] | None = None) -> list[GroupRun]:
    """Fresh caches and empty records for every group of ``setup`` (pinned caches primed with the
    calibration prefix's mean scores)."""
    runs = []
    for g in setup.groups:
        c = caches_mod.make(setup.cache_name, n_layers=n_layers, n_columns=g.n_columns,
                            capacity=setup.capacities[g.name], **setup.cache_params)
        if calib is not None and g.name in calib:
            c.prime(calib[g.name].mean(axis=0))
        # each group gets its own copy of the policy (a random policy: its own generators)
        runs.append(GroupRun(g, setup.policies[g.name].rows(0, n_layers), c, g.k(), setup.capacities[g.name],
                             np.zeros((n_tokens, n_layers), np.int32), np.zeros((n_tokens, n_layers), np.int32),
                             np.zeros((n_tokens, n_layers, (g.n_columns + 7) // 8), np.uint8)))
    return runs


def access_log(runs: list[GroupRun], config: dict[str, Any], meta: dict[str, Any], warmup: int, seconds: float,
               mlp_bytes: float) -> AccessLog:
    return AccessLog(config, meta, int(warmup), {r.group.name: r.log() for r in runs}, seconds,
                     {"mlp_bytes": mlp_bytes})


def replay(trace: Trace, masking: str | masking_mod.MaskingPolicy = "dip", cache: str = "lru",
           allocation: str = "uniform", *, keep: Any = 0.5, keep_up: Any = None, keep_gate: Any = None,
           keep_down: Any = None, dram_fraction: float | None = None, dram_bytes: float | None = None,
           weight_format: str | float | None = None, warmup: int = 16, calib_tokens: int = 64,
           tokens: int | None = None, cache_params: dict[str, Any] | None = None,
           allocation_params: dict[str, Any] | None = None, progress: bool = False,
           threads: int | None = None, **masking_params: Any) -> AccessLog:
    """Replay ``masking`` with a ``cache`` per layer and group over ``trace``; see the module docstring.

    Extra keyword arguments are the masking policy's parameters (``gamma=0.2``, ``fixed_top_n=8``,
    ``seed=1``). Every option is checked before any work; errors are one line. ``threads`` spreads
    the layers over that many threads (default: 2 for models whose columns per token make it pay,
    else 1); results do not depend on it.
    """
    t_start = time.perf_counter()
    T = trace.n_tokens if tokens is None else int(tokens)
    if not 0 < T <= trace.n_tokens:
        raise DipsimError(f"tokens must be in 1..{trace.n_tokens} (the trace's length), got {tokens}")
    if not 0 <= int(warmup) < T:
        raise DipsimError(f"warmup (--warmup) must be in 0..{T - 1} tokens for a {T}-token replay, got {warmup}; "
                          f"lower --warmup or replay more tokens")
    if int(calib_tokens) <= 0:
        raise DipsimError(f"calib_tokens must be > 0, got {calib_tokens}")
    policy = make_policy(masking, masking_params)
    needs_calib = policy.needs_calibration or cache == "pinned" or allocation != "uniform"
    meta = dict(trace.meta)
    # groups first (cheap) so that calibration reads only what is needed
    groups0 = make_groups(meta, policy, keep=keep, keep_up=keep_up, keep_gate=keep_gate, keep_down=keep_down,
                          weight_format=weight_format) if needs_calib else []
    calib = calibration_scores(trace, groups0, calib_tokens) if needs_calib else None
    setup = prepare(meta, policy, cache, allocation, keep=keep, keep_up=keep_up, keep_gate=keep_gate,
                    keep_down=keep_down, dram_fraction=dram_fraction, dram_bytes=dram_bytes,
                    weight_format=weight_format, cache_params=cache_params, calib=calib,
                    allocation_params=allocation_params)
    L = trace.n_layers
    runs = group_runs(setup, L, T, calib)
    kinds = sorted({r.group.kind for r in runs if r.group.pruned})

    def one_layer(layer: int) -> None:
        scores = {kind: trace.abs_layer(kind, layer, 0, T) for kind in kinds}
        for r in runs:
            s = scores.get(r.group.kind)
            if r.group.pruned and r.policy.score_source(r.group.kind) == "prev_x":   # a look-ahead predictor
                s = r.policy.scores_from(layer, r.group.kind, np.asarray(trace.x(max(layer - 1, 0))[:T], np.float32))
            r.run_layer(layer, s)

    n_threads = _threads(L, threads, sum(g.n_columns for g in setup.groups) * L)
    bar = progress_bar(L, progress, f"replay {policy.name}+{cache}", unit="layer")
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
    config = {"masking": policy.name, **{f"masking.{k}": v for k, v in policy.params().items()},
              "cache": cache, **{f"cache.{k}": v for k, v in setup.cache_params.items()},
              "allocation": allocation, "keep": keep, "keep_up": keep_up, "keep_gate": keep_gate,
              "keep_down": keep_down, "dram_fraction": dram_fraction if dram_bytes is None else None,
              "dram_bytes": setup.budget_bytes, "weight_format": weight_format or "source",
              "bytes_per_weight": bytes_per_weight(meta, weight_format), "warmup": warmup,
              "calib_tokens": calib_tokens if needs_calib else None, "tokens": T}
    return access_log(runs, config, meta, warmup, time.perf_counter() - t_start, setup.mlp_bytes)


def _threads(L: int, threads: int | None, columns_per_token: int) -> int:
    if threads is None:
        threads = min(2, os.cpu_count() or 1) if columns_per_token >= 200_000 else 1
    return max(1, min(int(threads), L))


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "tok"):
    """A tqdm bar on stderr (disabled: a no-op with the same interface)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                leave=False)
