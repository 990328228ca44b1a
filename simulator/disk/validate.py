"""Replay a configuration's miss stream as real direct reads and compare with the simulated time."""
from __future__ import annotations

import dataclasses

import os
import sys
import time
from typing import Any

import numpy as np

from common.errors import DipsimError

from .reads import ALIGN, MAX_LANES, Host, check_data_file, data_file


def stage_requests(log, layout, flash) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """For every token, the (offsets, sizes) of each stage's requests in issue order (as the engine)."""
    from ..engine.flash_stages import stage_groups

    L = log.n_layers
    stages = stage_groups(log)
    out = []
    for t in range(log.n_tokens):
        per_stage: list[tuple[list, list]] = [([], []) for _ in range(2 * L)]
        for s_i, names in enumerate(stages):
            for g in names:
                req = layout.requests(g, log.groups[g].missed_mask(t), int(flash.page_bytes), flash.max_request_bytes)
                starts = req.segment_starts(L)
                for layer in range(L):
                    a, b = starts[layer], starts[layer + 1]
                    per_stage[2 * layer + s_i][0].append(req.offsets[a:b])
                    per_stage[2 * layer + s_i][1].append(req.sizes[a:b])
        out.append([(np.concatenate(o) if o else np.zeros(0, np.int64), np.concatenate(z) if z else np.zeros(0, np.int64))
                    for o, z in per_stage])
    return out


def _rounds(host: Host, log, reqs, spec, layout, rounds: int, P: int, progress: bool) -> tuple[list, list]:
    """Measured and simulated flash seconds per token after the warm-up, ``rounds`` times, interleaved."""
    from ..engine import simulate

    sl = slice(log.warmup, None)
    measured_rounds, simulated_rounds = [], []
    for r in range(rounds):
        res = simulate(log, spec, layout=layout)          # simulated, then measured: interleaved
        simulated_rounds.append(res.flash_time[sl].copy())
        meas = np.zeros(log.n_tokens)
        for t, stages in enumerate(reqs):
            t0 = time.perf_counter()
            for offsets, sizes in stages:
                host.run(offsets, sizes, P)
            meas[t] = time.perf_counter() - t0
        measured_rounds.append(meas[sl])
        if progress:
            print(f"  round {r + 1}/{rounds}: measured {meas[sl].mean() * 1e3:.2f} ms/token, simulated "
                  f"{res.flash_time[sl].mean() * 1e3:.2f} ms/token", file=sys.stderr, flush=True)
    return measured_rounds, simulated_rounds


def validate(trace, profile: str | os.PathLike, *, file: str | os.PathLike, config=None, rounds: int = 3,
             tokens: int = 32, progress: bool = True, layout=None, io: str = "auto", **params) -> dict[str, Any]:
    """Measured vs simulated flash seconds per token for one configuration (see module docstring):
    ``config`` a ``ReplayConfig`` or its fields as keyword arguments; ``layout`` a ``LayoutConfig``
    or a mapping of its fields."""
    from ..engine import device_models
    from ..layout import Layout
    from ..replay import replay, replay_config

    if rounds < 1:
        raise DipsimError(f"--rounds must be >= 1, got {rounds}")
    path = check_data_file(file)
    models = device_models(profile)
    fl = models.flash
    if int(fl.page_bytes) % 512:
        raise DipsimError(f"{profile}: page_bytes {fl.page_bytes:g} is not a multiple of 512; direct reads need "
                          f"block-aligned requests")
    cfg = replay_config(config, **params) if config is not None else replay_config(**params)
    if cfg.tokens is None:         # a --tokens given is the replay's, which refuses more than the trace holds
        cfg = dataclasses.replace(cfg, tokens=min(tokens, trace.n_tokens))
    log = replay(trace, cfg)
    layout = Layout.of(log, layout)
    reqs = stage_requests(log, layout, fl)
    size = -(-layout.total_bytes // ALIGN) * ALIGN + ALIGN
    P = int(min(fl.queue_depth, MAX_LANES))   # outstanding requests the engine allows (Q)
    largest = max((int(z.max()) for st in reqs for _, z in st if len(z)), default=ALIGN)
    with data_file(path, size, progress):
        host = Host(path, largest, P, io)
        try:
            measured_rounds, simulated_rounds = _rounds(host, log, reqs, models.spec, layout, rounds, P, progress)
        finally:
            host.close()
    meas = np.array(measured_rounds)    # [rounds, T']
    sim = np.array(simulated_rounds)
    err_tok = (sim.mean(axis=0) - np.median(meas, axis=0)) / np.median(meas, axis=0)
    round_err = [float(np.median((s - m) / m)) for s, m in zip(sim, meas)]
    return {
        "profile": str(profile),
        "file": str(path),
        "tokens": int(meas.shape[1]),
        "rounds": rounds,
        "parallelism": P,
        "io": host.kind,
        "requests_per_token": float(np.mean([sum(len(z) for _, z in st) for st in reqs[log.warmup:]])),
        "measured_s_per_token": float(np.median(meas.mean(axis=1))),
        "simulated_s_per_token": float(np.median(sim.mean(axis=1))),
        "median_error": float(np.median(np.abs(err_tok))),
        "median_signed_error": float(np.median(err_tok)),
        "round_median_errors": round_err,
        "measured_spread": float((meas.mean(axis=1).max() - meas.mean(axis=1).min()) / np.median(meas.mean(axis=1))),
        "config": log.config,
    }
