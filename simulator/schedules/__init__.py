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
    greedy after TEAL's greedy allocation (Liu et al. 2024, arXiv 2408.14690; TEAL allocates among
           the matrices of each block by the block's output error): from every layer dense, lower by
           ``step`` the keep of the layer (and group) whose step costs the least error until the mean
           is reached, no layer below ``floor``. The costs are per-layer error curves of DIP masking
           (``curves``; ``error``: ``fisher``, the masking's change of the MLP output weighed by the
           gradient of the text's log-likelihood, or ``output``, ``residual``), measured once on
           ``tokens`` tokens of a calibration text ``text`` (``tail``: the default corpus from its
           middle on, which no run shorter than its first half -- 232,603 characters, tens of
           thousands of tokens -- reads; or a UTF-8 file) and cached; the text's SHA-256 prefix
           ``digest`` is recorded with the schedule (a changed text is refused).
           Given as ``keep`` of a policy that prunes up/gate and down, the allocation runs over both
           groups at once, each step costed per weight it saves (an up/gate column holds twice the
           weights of a down column), and ``mean`` is the mean over the MLP's weights: the same
           weights read per token as a uniform keep ``mean``, split between the groups where it costs
           least. As ``keep_up``, ``keep_gate`` or ``keep_down`` it allocates within that group.

Every layer's keep stays in (0, 1] (the parameters are checked against that: ``mean ± slope/2`` for a
ramp, ``mean ± 2 lam`` for owl, the most its centring can move a layer, ``floor <= mean`` for greedy)
and the mean over layers (greedy over both groups: over the weights) is ``mean`` exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import DipsimError
from common.params import choice, number

from . import curves, greedy


def _step(v: Any, where: str) -> float:
    v = number(0, 0.5, lo_open=True)(v, where)
    try:
        greedy.levels(v)
    except DipsimError as e:
        raise DipsimError(f"{where}: {e}") from None
    return v


def _text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise DipsimError(f"{where}: the calibration text is tail (the default corpus from its middle on) or a "
                          f"UTF-8 file, got {v!r}")
    return v


#: rule -> {parameter: (check, default)}; ``mean`` is every rule's
RULES: dict[str, dict[str, tuple[Any, Any]]] = {
    "ramp": {"slope": (number(-2, 2), 0.0)},
    "owl": {"lam": (number(0, 0.5), 0.08), "m": (number(1, 100), 5.0)},
    "greedy": {"step": (_step, 0.05), "floor": (number(0, 1, lo_open=True), 0.1), "tokens": (number(16, 8192, integer=True), 256),
               "text": (_text, "tail"),
               "error": (choice(*curves.ERRORS, kind="error measure"), "fisher"), "digest": (lambda v, where: str(v), None)},
}
MIN_KEEP = 1e-3
#: the run parameters a schedule may be given as
KEEPS = ("keep", "keep_up", "keep_gate", "keep_down")


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
    if rule == "greedy":
        return _check_greedy(out, where)
    spread = abs(out.get("slope", 0.0)) / 2 if rule == "ramp" else 2 * out["lam"]
    if out["mean"] - spread < MIN_KEEP or out["mean"] + spread > 1.0:
        what = "slope / 2" if rule == "ramp" else "2 lam"
        raise DipsimError(f"{where}: mean {out['mean']:g} +- {what} {spread:g} leaves (0, 1]: some layer's keep "
                          f"would be out of range")
    return out


def _check_greedy(out: dict[str, Any], where: str) -> dict[str, Any]:
    if out["floor"] > out["mean"]:
        raise DipsimError(f"{where}: greedy floor {out['floor']:g} is above its mean {out['mean']:g}")
    digest = curves.text_digest(out["text"], where + ".text")
    if out["digest"] is not None and out["digest"] != digest:
        raise DipsimError(f"{where}.digest: the calibration text {out['text']!r} changed since this schedule was "
                          f"recorded (digest {out['digest']}, now {digest}); drop digest to calibrate anew")
    out["digest"] = digest
    return out


def needs_scores(schedule: Any) -> bool:
    """Whether the schedule reads the calibration prefix's activations (owl)."""
    return isinstance(schedule, dict) and schedule.get("rule") == "owl"


def resolve(schedule: dict[str, Any], n_layers: int, scores: np.ndarray | None = None, *,
            model: str | None = None, group: str = "upgate") -> tuple[float, ...]:
    """The keep per layer. ``scores``: the calibration prefix's magnitudes ``[tokens, L, N]`` of the
    group (owl only); without them an owl schedule gives its mean everywhere (shape checks only).
    ``model`` and ``group`` (``upgate``, ``up``, ``gate``, ``down``, ``neuron``): whose error curves a
    greedy schedule allocates by (within the group)."""
    L, mean = int(n_layers), float(schedule["mean"])
    if schedule["rule"] == "greedy":
        err = _curves(schedule, model, L)[("down" if group in ("down", "neuron") else "upgate") + ":" + schedule["error"]]
        keep = greedy.allocate(err, mean, float(schedule["step"]), float(schedule["floor"]))
    elif schedule["rule"] == "ramp":
        pos = np.arange(L) / (L - 1) - 0.5 if L > 1 else np.zeros(1)
        keep = mean + float(schedule["slope"]) * pos
    elif scores is None:
        keep = np.full(L, mean)
    else:
        keep = owl_keeps(outlier_ratios(scores, float(schedule["m"])), mean, float(schedule["lam"]))
    return tuple(float(k) for k in np.clip(keep, MIN_KEEP, 1.0))


def resolve_joint(schedule: dict[str, Any], n_layers: int, model: str | None,
                  weights: tuple[float, float] = (2.0, 1.0)) -> dict[str, tuple[float, ...]]:
    """A greedy schedule over both groups at once: ``{"upgate": keeps, "down": keeps}`` whose mean
    over the weights (``weights``: per layer, up/gate's and down's; 2 d_model d_ff and d_model d_ff)
    is the schedule's mean."""
    L = int(n_layers)
    c = _curves(schedule, model, L)
    w = np.r_[np.full(L, float(weights[0])), np.full(L, float(weights[1]))]
    e = schedule["error"]
    keep = greedy.allocate(np.vstack([c["upgate:" + e], c["down:" + e]]), float(schedule["mean"]), float(schedule["step"]),
                           float(schedule["floor"]), w)
    return {"upgate": tuple(float(k) for k in keep[:L]), "down": tuple(float(k) for k in keep[L:])}


def _curves(schedule: dict[str, Any], model: str | None, L: int) -> dict[str, np.ndarray]:
    if model is None:
        raise DipsimError("keep schedule greedy allocates by the error curves of a real model; this run names none")
    try:
        out = curves.curves(model, schedule["text"], int(schedule["tokens"]), float(schedule["step"]))
    except DipsimError as e:
        raise DipsimError(f"keep schedule greedy measures its error curves on the model {model!r}: {e}") from None
    if out["down:" + schedule["error"]].shape[0] != L:
        raise DipsimError(f"keep schedule greedy: model {model!r} has {out['down:fisher'].shape[0]} layers, the run {L}")
    return out


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
