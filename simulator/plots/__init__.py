"""Plots of sweep results. Every function takes a results DataFrame (``sweep.load_results``) and
returns ``(fig, ax)``; none calls ``show()``. Columns: ``p.<parameter>`` and ``m.<metric>``.

Every figure names its units on the axes and the run's context (model, device, keep, cache) in its
title, has one legend, uses a log axis only where the data spans decades and never for bars. A
plot the results cannot support (against gamma when gamma does not vary, say) is refused, naming
the missing axis, rather than drawn meaningless.
"""
from __future__ import annotations

from typing import Any

from common.errors import DipsimError

from .base import context, label, varies
from .lines import lines, per_device, vs_budget, vs_gamma, vs_keep
from .tradeoff import accuracy_vs_speed, pareto, pareto_front, point_label, speedup_axis

KINDS = ("auto", "gamma", "keep", "device", "pareto")

__all__ = ["KINDS", "accuracy_vs_speed", "auto", "context", "label", "lines", "pareto", "pareto_front", "per_device",
           "plot", "point_label", "speedup_axis", "vs_budget", "vs_gamma", "vs_keep"]


def _varying(df) -> list[str]:
    return [c for c in df.columns if c.startswith("p.") and varies(df, c)]


def auto(df) -> tuple[Any, Any]:
    """The plot that fits a results table: accuracy against speed when it holds both and the device
    is fixed, else by its varying parameters."""
    varying = _varying(df)
    if "m.perplexity" in df.columns and "m.tokens_per_s" in df.columns and "p.device" not in varying:
        return accuracy_vs_speed(df)
    if "p.device" in varying and "m.tokens_per_s" in df.columns:
        return per_device(df)
    if "p.gamma" in varying:
        return vs_gamma(df)
    if "p.keep" in varying:
        return vs_keep(df)
    if "p.dram_fraction" in varying:
        return vs_budget(df)
    raise DipsimError(f"no plot for these results: nothing varies among gamma, keep, dram_fraction, device "
                      f"(varying: {', '.join(c[2:] for c in varying) or 'nothing'})")


def plot(df, kind: str = "auto") -> tuple[Any, Any]:
    """The plot ``kind`` (one of :data:`KINDS`) of a results table, or a one-line refusal."""
    if kind not in KINDS:
        raise DipsimError(f"unknown plot kind {kind!r}; allowed: {', '.join(KINDS)}")
    if kind == "pareto":
        if "m.tokens_per_s" not in df.columns:
            raise DipsimError("--kind pareto plots against tokens/s, but these results have none (the sweep had no "
                              "device)")
        if "m.perplexity" in df.columns:
            return accuracy_vs_speed(df)
        if not varies(df, "p.keep"):
            raise DipsimError("--kind pareto needs accuracy (accuracy: true) or a keep axis to trade tokens/s against")
        return pareto(df)
    return {"auto": auto, "gamma": vs_gamma, "keep": vs_keep, "device": per_device}[kind](df)
