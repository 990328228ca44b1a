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

from typing import Any, Iterable

import numpy as np

from common.errors import DipsimError
from traces.format import Trace

from . import masking as masking_mod
from .kernels import lru_stack_hits
from .replay import calibration_scores, make_groups, make_policy, prepare, progress_bar, replay


def curve(trace: Trace, masking: str | masking_mod.MaskingPolicy = "dip", *, keep: Any = 0.5,
          keep_up: Any = None, keep_gate: Any = None, keep_down: Any = None, weight_format=None,
          fractions: Iterable[float] | None = None, opt: bool = True, cache: str = "lru", warmup: int = 16,
          calib_tokens: int = 64, tokens: int | None = None, progress: bool = False,
          **masking_params: Any) -> list[dict[str, Any]]:
    """Rows ``{fraction, capacity_<group>, hit_rate_<policy>, ...}`` for the given DRAM fractions."""
    policy = make_policy(masking, masking_params)
    fr = np.round(np.linspace(0, 1, 21), 4) if fractions is None else np.asarray(list(fractions), dtype=float)
    if ((fr < 0) | (fr > 1)).any():
        raise DipsimError(f"fractions must be in [0, 1], got {fr.tolist()}")
    T = trace.n_tokens if tokens is None else int(tokens)
    common = dict(keep=keep, keep_up=keep_up, keep_gate=keep_gate, keep_down=keep_down, weight_format=weight_format,
                  warmup=warmup, calib_tokens=calib_tokens, tokens=T)
    rows: list[dict[str, Any]] = [{"fraction": float(f)} for f in fr]

    if policy.cache_aware or cache != "lru":
        # rerun per size
        for row, f in zip(rows, _bar(fr, progress, f"mrc {policy.name}+{cache}")):
            tot = replay(trace, policy, cache, dram_fraction=float(f), progress=False, **common).totals()
            row[f"hit_rate_{cache}"] = tot["hit_rate"]
            for gname, g in tot["groups"].items():
                row[f"capacity_{gname}"] = g["capacity_columns"]
                row[f"hit_rate_{cache}_{gname}"] = g["hit_rate"]
    else:
        groups = make_groups(trace.meta, policy, keep=keep, keep_up=keep_up, keep_gate=keep_gate, keep_down=keep_down,
                             weight_format=weight_format)
        calib = calibration_scores(trace, groups, calib_tokens) if policy.needs_calibration else None
        setup = prepare(trace.meta, policy, "none", keep=keep, keep_up=keep_up, keep_gate=keep_gate,
                        keep_down=keep_down, weight_format=weight_format, calib=calib)
        L = trace.n_layers
        hits_b = np.zeros(len(fr))
        sel_b = 0.0
        bar = progress_bar(L * len(setup.groups), progress, f"mrc {policy.name}+lru (one pass)", unit="layer")
        for g in setup.groups:
            H = np.zeros(g.n_columns + 1, dtype=np.int64)
            sel = 0
            k = g.k()
            for layer in range(L):  # layer by layer: a layer's LRU depends on its own masks only
                masks = (setup.policies[g.name].select_layer(layer, trace.abs_layer(g.kind, layer, 0, T), int(k[layer]))
                         if g.pruned else np.ones((T, g.n_columns), dtype=bool))
                H += lru_stack_hits(masks[:, None, :], 1, g.n_columns, skip=warmup)[0]
                sel += int(masks[warmup:].sum())
                bar.update(1)
            caps = np.floor(fr * g.n_columns + 1e-9).astype(int)
            for row, c in zip(rows, caps):
                row[f"capacity_{g.name}"] = float(c)
                row[f"hit_rate_lru_{g.name}"] = H[c] / sel if sel else 0.0
            hits_b += H[caps] * g.bytes_per_column
            sel_b += sel * g.bytes_per_column
        bar.close()
        for row, hb in zip(rows, hits_b):
            row["hit_rate_lru"] = hb / sel_b if sel_b else 0.0
    if opt and not policy.cache_aware:
        for row, f in zip(rows, _bar(fr, progress, f"mrc {policy.name}+belady")):
            tot = replay(trace, policy, "belady", dram_fraction=float(f), **common).totals()
            row["hit_rate_belady"] = tot["hit_rate"]
    return rows


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
    x = [r["fraction"] for r in rows]
    for key in sorted(k for k in rows[0] if k.startswith("hit_rate_") and k.count("_") == 2):
        ax.plot(x, [r[key] for r in rows], marker="o", ms=3, label=key.removeprefix("hit_rate_"))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="hit rate = size")
    ax.set_xlabel("DRAM cache size (fraction of MLP weights)")
    ax.set_ylabel("hit rate (by bytes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig, ax
