"""Per-layer keep schedules: a keep per layer from a rule and a few parameters, so that a search (or a
sweep axis) varies two or three numbers rather than one keep per layer, and results record the rule
and its parameters rather than only a list.

A schedule is a mapping given wherever a keep goes (``keep``, ``keep_up``, ``keep_gate``,
``keep_down``; in experiment files, ``--keep '{rule: ramp, mean: 0.5, slope: 0.3}'`` on the command
line, nested search keys such as ``keep.slope``):

    ramp   keep_l = mean + slope * (l / (L - 1) - 1/2): a linear ramp over depth with the given mean
           (slope > 0 keeps more in later layers)
    owl    outlier-weighted (after OWL, Yin et al., ICML 2024, "Outlier Weighed Layerwise Sparsity",
           which sets weight sparsity per layer): layer l's outlier ratio D_l is the share of its
           activation magnitudes (|x| for up/gate, |h| for down, on the calibration prefix) above
           ``m`` times the layer's mean magnitude; keeps are spread linearly with D over a range of
           width 2 lam, centred so that their mean is ``mean``: layers with more outliers keep more

Every layer's keep stays in (0, 1] (the parameters are checked against that: ``mean ± slope/2`` for a
ramp, ``mean ± 2 lam`` for owl, the most its centring can move a layer) and the mean over layers is
``mean`` exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import DipsimError
from common.params import number

#: rule -> {parameter: (check, default)}; ``mean`` is every rule's
RULES: dict[str, dict[str, tuple[Any, Any]]] = {
    "ramp": {"slope": (number(-2, 2), 0.0)},
    "owl": {"lam": (number(0, 0.5), 0.08), "m": (number(1, 100), 5.0)},
}
MIN_KEEP = 1e-3


def check(v: Any, where: str) -> dict[str, Any]:
    """A schedule mapping, every parameter checked and defaults filled in (``{rule, mean, ...}``)."""
    if not isinstance(v, dict) or v.get("rule") not in RULES:
        raise DipsimError(f"{where}: a keep schedule is a mapping with rule ({', '.join(RULES)}), mean and the "
                          f"rule's parameters, got {v!r}")
    rule = v["rule"]
    takes = RULES[rule]
    unknown = [k for k in v if k not in ("rule", "mean", *takes)]
    if unknown:
        raise DipsimError(f"{where}.{unknown[0]}: keep schedule {rule!r} has no parameter {unknown[0]!r}; its "
                          f"parameters: mean, {', '.join(takes)}")
    if "mean" not in v:
        raise DipsimError(f"{where}: keep schedule {rule!r} needs mean (the keep averaged over layers)")
    out: dict[str, Any] = {"rule": rule, "mean": number(0, 1, lo_open=True)(v["mean"], f"{where}.mean")}
    for k, (chk, default) in takes.items():
        out[k] = chk(v[k], f"{where}.{k}") if k in v else default
    spread = abs(out.get("slope", 0.0)) / 2 if rule == "ramp" else 2 * out["lam"]
    if out["mean"] - spread < MIN_KEEP or out["mean"] + spread > 1.0:
        what = "slope / 2" if rule == "ramp" else "2 lam"
        raise DipsimError(f"{where}: mean {out['mean']:g} +- {what} {spread:g} leaves (0, 1]: some layer's keep "
                          f"would be out of range")
    return out


def needs_scores(schedule: Any) -> bool:
    """Whether the schedule reads the calibration prefix's activations (owl)."""
    return isinstance(schedule, dict) and schedule.get("rule") == "owl"


def resolve(schedule: dict[str, Any], n_layers: int, scores: np.ndarray | None = None) -> tuple[float, ...]:
    """The keep per layer. ``scores``: the calibration prefix's magnitudes ``[tokens, L, N]`` of the
    group (owl only); without them an owl schedule gives its mean everywhere (shape checks only)."""
    L, mean = int(n_layers), float(schedule["mean"])
    if schedule["rule"] == "ramp":
        pos = np.arange(L) / (L - 1) - 0.5 if L > 1 else np.zeros(1)
        keep = mean + float(schedule["slope"]) * pos
    elif scores is None:
        keep = np.full(L, mean)
    else:
        keep = owl_keeps(outlier_ratios(scores, float(schedule["m"])), mean, float(schedule["lam"]))
    return tuple(float(k) for k in np.clip(keep, MIN_KEEP, 1.0))


def outlier_ratios(scores: np.ndarray, m: float) -> np.ndarray:
    """Per layer: the share of magnitudes above ``m`` times the layer's mean magnitude."""
    a = np.asarray(scores, dtype=np.float64)
    mean = a.mean(axis=(0, 2), keepdims=True)
    return (a > m * mean).mean(axis=(0, 2))


def owl_keeps(ratios: np.ndarray, mean: float, lam: float) -> np.ndarray:
    """Keeps spread linearly with the outlier ratios over [mean - lam, mean + lam], mean restored."""
    d = np.asarray(ratios, dtype=np.float64)
    span = d.max() - d.min()
    if span <= 0 or lam == 0:
        return np.full(len(d), mean)
    keep = mean - lam + 2 * lam * (d - d.min()) / span
    return keep - keep.mean() + mean
