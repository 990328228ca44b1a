"""What the report shows, from a results table: the axes of the explorer, each point's facets,
configuration and metrics (with the units of ``simulator.metrics``), its accuracy loss against the
dense model, and the steps of the accuracy budget.

Any table with ``p.<param>`` and ``m.<metric>`` columns works: a sweep's ``results.parquet``, a
search's trials. The speed axis is the first of ``tokens_per_s``, ``analytic_tokens_per_s``,
``hit_rate`` the table has; the accuracy axis the first of ``perplexity``, a ``*accuracy*`` metric
with a ``dense_<metric>`` column beside it (a task's), ``kl_to_dense``, ``top1_agreement`` (each can
be chosen). A
table without accuracy figures gets flash traffic (or the hit rate) on the y axis and no budget.
``<metric>_low`` / ``<metric>_high`` columns (bootstrap intervals, a synthetic trace's error) become
error bars.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError

from ..metrics import METRICS

SPEED = ("tokens_per_s", "analytic_tokens_per_s", "hit_rate")
#: the y axis of a table without accuracy figures (no budget then)
NO_ACCURACY = ("flash_bytes_per_token", "hit_rate")
ACCURACY = ("perplexity", "kl_to_dense", "top1_agreement")
#: accuracy metrics where higher is better (the rest: lower is better)
HIGHER = ("top1_agreement", "accuracy", "agreement")
#: (facet, columns that give it, first found)
FACETS = (("device", ("p.device",)), ("model", ("p.model", "p.trace")), ("method", ("p.masking",)),
          ("cache", ("p.cache",)))
#: the budget steps the slider offers at most (the losses' quantiles beyond that)
MAX_STEPS = 40


def unit(col: str) -> str:
    """The unit of a ``m.<metric>`` or ``m.<group>.<metric>`` column (``metrics.METRICS``)."""
    name = col[2:] if col.startswith("m.") else col
    base = name.rsplit(".", 1)[-1]
    for n in (name, base, base.removesuffix("_low").removesuffix("_high")):
        if n in METRICS:
            return METRICS[n][0]
    return ""


def meaning(col: str) -> str:
    name = col[2:] if col.startswith("m.") else col
    return METRICS.get(name.rsplit(".", 1)[-1], ("", ""))[1]


def fmt(v: Any, u: str = "") -> str:
    """A value as people read it: bytes with a prefix, fractions to 3 places, 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    x = float(v)
    if u in ("B", "B/token") and abs(x) >= 1e3:
        for p, s in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(x) >= s:
                return f"{x / s:.4g} {p}{u}"
    if u == "fraction":
        return f"{x:.3f}"
    if u == "x":
        return f"{x:.3g}×"
    return f"{x:.4g}{' ' + u if u and u not in ('text', 'bool') else ''}"


def number(v: Any) -> float | None:
    """A finite number, or None (missing, NaN, infinite or not a number)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def higher_is_better(metric: str) -> bool:
    return any(h in metric for h in HIGHER)


@dataclass(frozen=True)
class Axes:
    speed: str                 # column of the x axis (higher is better)
    accuracy: str | None       # column of the y axis (None: the table has nothing to put there)
    dense: str | None          # the column of the dense model's figure for the accuracy metric
    higher: bool               # higher accuracy is better
    measured: bool = True      # the y axis is an accuracy (else a stand-in: no budget)

    def loss(self, df) -> np.ndarray:
        """Each row's accuracy loss: relative to the dense model when its figure is there (perplexity
        +10% is 0.1), else the metric itself (lower is better) or its shortfall from 1 (higher)."""
        if not self.measured:
            return np.zeros(len(df))
        y = df[self.accuracy].to_numpy(float)
        if self.dense is not None:
            d = df[self.dense].to_numpy(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                return (d - y) / d if self.higher else y / d - 1.0
        return 1.0 - y if self.higher else y

    def budget_label(self, b: float) -> str:
        if not math.isfinite(b):
            return "any"
        name = self.accuracy.removeprefix("m.")
        if self.dense is not None:
            return f"{'−' if self.higher else '+'}{100 * b:.3g}%"
        return f"{name} ≥ {1 - b:.3g}" if self.higher else f"{name} ≤ {b:.3g}"


def choose_axes(df, speed: str | None = None, accuracy: str | None = None) -> Axes:
    """The explorer's axes: the ones asked for (a metric name, with or without ``m.``) or the first the
    table has (see the module docstring)."""
    cols = set(df.columns)

    def pick(asked, candidates, what):
        if asked is not None:
            c = asked if asked.startswith("m.") else f"m.{asked}"
            if c not in cols or not df[c].notna().any():
                have = ", ".join(sorted(x[2:] for x in cols if x.startswith("m.") and df[x].dtype.kind in "fiu"))
                raise DipsimError(f"--{what}: the table has no {c[2:]!r} figures; it has: {have}")
            return c
        return next((f"m.{c}" for c in candidates if f"m.{c}" in cols and df[f"m.{c}"].notna().any()), None)

    x = pick(speed, SPEED, "speed")
    if x is None:
        raise DipsimError(f"the table has none of the speed metrics {', '.join(SPEED)}: nothing to explore "
                          f"(columns: {', '.join(sorted(cols))[:300]})")
    with_dense = [c[8:] for c in sorted(cols) if c.startswith("m.dense_") and f"m.{c[8:]}" in cols
                  and "accuracy" in c and not c.endswith(("_low", "_high"))]     # a task's accuracy (MMLU)
    y = pick(accuracy, ACCURACY[:1] + tuple(with_dense) + ACCURACY[1:], "accuracy")
    if y is None:
        stand_in = next((f"m.{c}" for c in NO_ACCURACY if f"m.{c}" != x and f"m.{c}" in cols), None)
        return Axes(x, stand_in, None, higher_is_better(stand_in or "") or stand_in == "m.hit_rate", measured=False)
    dense = f"m.dense_{y[2:]}" if f"m.dense_{y[2:]}" in cols and df[f"m.dense_{y[2:]}"].notna().any() else None
    return Axes(x, y, dense, higher_is_better(y[2:]))


def budget_steps(axes: Axes, loss: np.ndarray) -> tuple[list[float], int]:
    """The slider's budgets (each admits at least one more point; the last admits every point) and the
    one it starts at: the largest within +10% of dense where the budget is relative, else the median."""
    finite = np.unique(np.round(loss[np.isfinite(loss)], 6))
    finite = np.maximum(finite, 0.0) if axes.dense is not None else finite
    finite = np.unique(finite)
    if finite.size > MAX_STEPS:
        finite = np.unique(np.quantile(finite, np.linspace(0, 1, MAX_STEPS)))
    steps = [float(v) for v in finite] + [math.inf]
    if not axes.measured:
        return [math.inf], 0
    if axes.dense is not None:
        start = max([i for i, v in enumerate(steps) if v <= 0.1 + 1e-12] or [len(steps) - 1])
    else:
        start = len(steps) // 2
    return steps, start


def model_of(row: dict[str, Any], traces: dict[str, Any]) -> str:
    """The model of a row: ``p.model``, the ``model`` of a ``{model, tokens}`` trace, or what the
    provenance says of a trace file (else its name)."""
    if row.get("p.model"):
        return str(row["p.model"])
    t = row.get("p.trace")
    if isinstance(t, str) and t.startswith("{"):
        try:
            return str(json.loads(t).get("model", t))
        except ValueError:
            return t
    if isinstance(t, str):
        return str((traces.get(t) or {}).get("model") or Path(t).stem)
    return "–"


def facets(rows: list[dict[str, Any]], traces: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for r in rows:
        f = {}
        for name, cols in FACETS:
            if name == "model":
                f[name] = model_of(r, traces)
                continue
            col = next((c for c in cols if c in r), None)
            f[name] = "–" if col is None or r[col] is None or r[col] != r[col] else str(r[col])
        out.append(f)
    return out
