"""Miss-ratio curves: hit rate against cache size.

* Cache-oblivious masking (dense, dip, glu-prune, threshold, static, random): the masks do not
  depend on the cache, so LRU's hit count for *every* capacity comes from one pass over the masks
  with stack distances (Mattson et al., 1970). With dipsim's set steps LRU keeps, at any moment,
  the ``C`` columns with the most recent use (ties within a step: higher index more recent), so a
  column hits at capacity ``C`` exactly when its recency rank at the step's start is <= ``C``.
  OPT (``belady``) is added by rerunning replay at a grid of sizes.
* Cache-aware masking (dip-ca): the masks change with the cache, so the curve reruns replay per
  size.

Sizes are fractions of the MLP weights with the uniform allocation (the same fraction of every
layer and group); the hit rate is by bytes across groups, over the tokens after warm-up.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np

from common.errors import DipsimError
from traces.format import Trace

from .kernels import lru_stack_hits
from .replay import calibration, prepare, progress_bar, replay, replay_config


def curve(trace: Trace, config: Any = "dip", *, fractions: Iterable[float] | None = None, opt: bool = True,
          progress: bool = False, **params: Any) -> list[dict[str, Any]]:
    """One row per DRAM fraction: ``dram_fraction``, ``<group>.capacity_columns_per_layer``,
    ``<cache>.hit_rate`` (by bytes, all groups) and ``<cache>.<group>.hit_rate``, plus
    ``belady.hit_rate`` (OPT) when ``opt`` and the masking is cache-oblivious. ``config``: a
    ``ReplayConfig`` or a masking policy name with the replay parameters as keyword arguments; its
    own budget is replaced by each fraction."""
    cfg = replay_config(config, **params)
    policy = cfg.policy()
    fr = np.round(np.linspace(0, 1, 21), 4) if fractions is None else np.asarray(list(fractions), dtype=float)
    if ((fr < 0) | (fr > 1)).any():
        raise DipsimError(f"fractions must be in [0, 1], got {fr.tolist()}")
    T = trace.n_tokens if cfg.tokens is None else cfg.tokens
    rows: list[dict[str, Any]] = [{"dram_fraction": float(f)} for f in fr]

    def at(f: float, cache: str):
        return dataclasses.replace(cfg, cache=cache, dram_fraction=float(f), dram_bytes=None, tokens=T)

    if policy.cache_aware or cfg.cache != "lru":
        for row, f in zip(rows, _bar(fr, progress, f"mrc {policy.name}+{cfg.cache}")):
            tot = replay(trace, at(f, cfg.cache)).totals()
            row[f"{cfg.cache}.hit_rate"] = tot["hit_rate"]
            for gname, g in tot["groups"].items():
                row[f"{gname}.capacity_columns_per_layer"] = g["capacity_columns_per_layer"]
                row[f"{cfg.cache}.{gname}.hit_rate"] = g["hit_rate"]
    else:
        _one_pass_lru(trace, at(0.0, "none"), fr, rows, progress)
    if opt and not policy.cache_aware:
        for row, f in zip(rows, _bar(fr, progress, f"mrc {policy.name}+belady")):
            row["belady.hit_rate"] = replay(trace, at(f, "belady")).totals()["hit_rate"]
    return rows


def _one_pass_lru(trace: Trace, cfg, fr: np.ndarray, rows: list[dict[str, Any]], progress: bool) -> None:
    """LRU's hit rate at every fraction from one pass of stack distances, layer by layer (a layer's
    LRU depends on its own masks only)."""
    T = cfg.tokens
    calib = calibration(trace, trace.meta, cfg)
    setup = prepare(trace.meta, cfg, calib)
    L = trace.n_layers
    hits_b = np.zeros(len(fr))
    sel_b = 0.0
    bar = progress_bar(L * len(setup.groups), progress, f"mrc {cfg.masking}+lru (one pass)", unit="layer")
    for g in setup.groups:
        H = np.zeros(g.n_columns + 1, dtype=np.int64)
        sel = 0
        k = g.k()
        for layer in range(L):
            masks = (setup.policies[g.name].select_layer(layer, trace.abs_layer(g.kind, layer, 0, T), int(k[layer]))
                     if g.pruned else np.ones((T, g.n_columns), dtype=bool))
            H += lru_stack_hits(masks[:, None, :], 1, g.n_columns, skip=cfg.warmup)[0]
            sel += int(masks[cfg.warmup:].sum())
            bar.update(1)
        caps = np.floor(fr * g.n_columns + 1e-9).astype(int)
        for row, c in zip(rows, caps):
            row[f"{g.name}.capacity_columns_per_layer"] = float(c)
            row[f"lru.{g.name}.hit_rate"] = H[c] / sel if sel else 0.0
        hits_b += H[caps] * g.bytes_per_column
        sel_b += sel * g.bytes_per_column
    bar.close()
    for row, hb in zip(rows, hits_b):
        row["lru.hit_rate"] = hb / sel_b if sel_b else 0.0


def _bar(items, enabled: bool, desc: str):
    """Iterate ``items`` with a progress bar (one unit per cache size)."""
    bar = progress_bar(len(items), enabled, desc, unit="size")
    for item in items:
        yield item
        bar.update(1)
    bar.close()


def plot_curve(rows: list[dict[str, Any]], title: str = ""):
    """Hit rate against DRAM fraction, one line per cache policy; returns ``(fig, ax)``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["dram_fraction"] for r in rows]
    for key in sorted(k for k in rows[0] if k.endswith(".hit_rate") and k.count(".") == 1):
        ax.plot(x, [r[key] for r in rows], marker="o", ms=3, label=key.split(".")[0])
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="hit rate = size")
    ax.set_xlabel("DRAM cache size (fraction of MLP weights)")
    ax.set_ylabel("hit rate (by bytes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    from .plots.base import fit_title

    ax.set_title(fit_title(title, fig, fontsize=11), fontsize=11)
    fig.tight_layout()
    return fig, ax
