"""What replay decides before the first token: matrix groups, keeps, policies, cache capacities.

Matrix groups (each with its own cache per layer):

* ``upgate`` -- column i of W_up and column i of W_gate, bundled (i indexes d_model; they share one
  mask, selected by |x|): 2 * d_ff weights per column;
* ``up`` and ``gate`` -- separately, when a gate keep different from up's is given (``keep_gate``);
  gate's mask is then top-k_gate of the same |x|;
* ``down`` -- column j of W_down (j indexes d_ff, selected by |GLU(x)|): d_model weights;
* ``neuron`` -- for a neuron-level policy (``cats``, ``dejavu``, ``powerinfer``): index i of d_ff,
  one mask for row i of W_gate, row i of W_up and column i of W_down, cached and read together as
  one bundle of ``len(bundle) x d_model`` weights; where W_gate is computed densely (``cats``) the
  bundle is up + down and W_gate is a dense ``gate`` group of its own (d_model columns).

The DRAM budget for the cache, a fraction of all MLP weights (``dram_fraction``) or bytes
(``dram_bytes``), is split over layers and groups by an allocation scheme (``simulator.allocation``)
and turned into columns through each group's bytes per column (trace metadata x bytes per weight,
or ``weight_format``: int4, int8, fp16, bf16, fp32, source, or a number of bytes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DipsimError
from traces.format import Trace, is_synthetic

from .. import allocation as alloc_mod
from .. import masking as masking_mod
from .. import schedules
from ..config import DEFAULT_DRAM_FRACTION, WEIGHT_FORMATS, ReplayConfig

def bytes_per_weight(trace_meta: dict[str, Any], weight_format: str | float | None) -> float:
    """Bytes per MLP weight: the trace's own (``source``), a named format, or a number (checked by
    ``config.ReplayConfig``)."""
    if weight_format in (None, "source"):
        return float(trace_meta["bytes_per_weight"])
    if isinstance(weight_format, str):
        return WEIGHT_FORMATS[weight_format]
    return float(weight_format)


@dataclass(frozen=True)
class Group:
    name: str
    kind: str                 # "x" (scores |x|), "h" (|GLU(x)|) or "g" (|act(W_gate x)|)
    n_columns: int
    bytes_per_column: float
    keep: tuple[float, ...]   # per layer
    pruned: bool              # False: every column every token
    parts: tuple[str, ...] = ()   # the matrices one column holds a piece of (a neuron: its bundle)

    def k(self) -> np.ndarray:
        return np.array([max(1, int(round(f * self.n_columns))) if f > 0 else 0 for f in self.keep], dtype=np.int64)


def _keep_vector(value: Any, L: int, what: str, scores: np.ndarray | None = None, model: str | None = None,
                 group: str = "upgate") -> tuple[float, ...]:
    if isinstance(value, dict):     # a schedule (simulator.schedules): owl reads the calibration scores
        value = schedules.resolve(value, L, scores, model=model, group=group)
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.size == 1:
        arr = np.full(L, float(arr[0]))
    if arr.shape != (L,):
        raise DipsimError(f"{what} must be a number or a list of {L} numbers (one per layer), got {arr.size} values")
    if not np.all((arr > 0) & (arr <= 1)):
        raise DipsimError(f"{what} must be in (0, 1], got {arr.tolist() if arr.size < 8 else arr.min()}")
    return tuple(float(v) for v in arr)


def make_groups(meta: dict[str, Any], cfg: ReplayConfig, calib: dict[str, np.ndarray] | None = None) -> list[Group]:
    """The matrix groups of a trace's model under a configuration (keeps per layer checked against
    the model's depth; a keep schedule resolved per layer, an outlier-weighted one from ``calib``'s
    scores: without them it reads its mean everywhere, enough for the groups' shapes)."""
    policy = masking_mod.REGISTRY.get_class(cfg.masking)
    cfg.policy().check_trace(meta)
    keep, keep_up, keep_gate, keep_down = cfg.keep, cfg.keep_up, cfg.keep_gate, cfg.keep_down
    L, dm, dff = int(meta["n_layers"]), int(meta["d_model"]), int(meta["d_ff"])
    bpw = bytes_per_weight(meta, cfg.weight_format)
    dense = tuple([1.0] * L)
    c = calib or {}
    x_scores = c.get("upgate", c.get("up"))
    bundle, model = policy.neuron_bundle, meta.get("model")
    if bundle is not None:
        groups = [] if "gate" in bundle else [Group("gate", "x", dm, dff * bpw, dense, False, ("gate",))]
        return groups + [Group("neuron", cfg.policy().neuron_kind(), dff, len(bundle) * dm * bpw,
                               _keep_vector(keep, L, "keep", c.get("neuron"), model, "neuron"), True, tuple(bundle))]
    up_pruned = "upgate" in policy.prunes
    if (isinstance(keep, dict) and keep["rule"] == "greedy" and keep_up is keep_gate is keep_down is None
            and up_pruned and "down" in policy.prunes):     # one greedy keep: allocated over both groups
        joint = schedules.resolve_joint(keep, L, model, (2.0 * dm * dff, dm * dff))
        keep_up, keep_down = list(joint["upgate"]), list(joint["down"])
    k_up = _keep_vector(keep if keep_up is None else keep_up, L, "keep_up" if keep_up is not None else "keep", x_scores,
                        model, "upgate")
    k_down = _keep_vector(keep if keep_down is None else keep_down, L, "keep_down" if keep_down is not None else "keep",
                          c.get("down"), model, "down")
    groups = []
    if keep_gate is None:
        groups.append(Group("upgate", "x", dm, 2 * dff * bpw, k_up if up_pruned else dense, up_pruned, ("up", "gate")))
    else:
        k_gate = _keep_vector(keep_gate, L, "keep_gate", x_scores, model, "gate")
        groups.append(Group("up", "x", dm, dff * bpw, k_up if up_pruned else dense, up_pruned, ("up",)))
        groups.append(Group("gate", "x", dm, dff * bpw, k_gate if up_pruned else dense, up_pruned, ("gate",)))
    down_pruned = "down" in policy.prunes
    groups.append(Group("down", "h", dff, dm * bpw, k_down if down_pruned else dense, down_pruned, ("down",)))
    return groups


@dataclass(frozen=True)
class ReplaySetup:
    """Everything replay decided before the first token (also used by the closed loop)."""

    groups: list[Group]
    policies: dict[str, masking_mod.MaskingPolicy]
    capacities: dict[str, np.ndarray]
    cache_name: str
    cache_params: dict[str, Any]
    budget_bytes: float
    mlp_bytes: float


def prepare(meta: dict[str, Any], cfg: ReplayConfig, calib: dict[str, np.ndarray] | None = None) -> ReplaySetup:
    """Decide groups, keeps, calibrated policies and cache capacities (``cfg`` holds checked values;
    the checks that need the trace's model happen here)."""
    policy = cfg.policy()
    if cfg.offline_cache and policy.cache_aware:
        raise DipsimError(f"cache policy {cfg.cache!r} is an offline oracle: it needs the access sequence in advance, "
                          f"but {policy.name}'s choices depend on the cache; use it with cache-oblivious masking "
                          f"(dense, dip, glu-prune, threshold, static, random)")
    mismatch = cfg.cache_mismatch()
    if mismatch:
        raise DipsimError(f"{mismatch} (its residency rule); use cache: {policy.cache_policies[0]}")
    groups = make_groups(meta, cfg, calib)
    _check_scores(meta, policy, groups)
    L = int(meta["n_layers"])
    mlp_bytes = float(sum(g.n_columns * g.bytes_per_column for g in groups) * L)
    if cfg.dram_bytes is not None:
        budget = float(cfg.dram_bytes)
    else:
        budget = (DEFAULT_DRAM_FRACTION if cfg.dram_fraction is None else float(cfg.dram_fraction)) * mlp_bytes
    if cfg.cache == "none":
        budget = 0.0
    capacities = alloc_mod.allocate(cfg.allocation, groups, L, budget, calib=calib, **cfg.allocation_params)
    policies = {}
    for g in groups:
        if g.pruned and policy.needs_calibration:
            if calib is None or g.name not in calib:
                raise DipsimError(f"masking {policy.name!r} needs a calibration prefix")
            policies[g.name] = policy.calibrate(calib[g.name], g.k())
        else:
            policies[g.name] = policy
    return ReplaySetup(groups, policies, capacities, cfg.cache, dict(cfg.cache_params), budget, mlp_bytes)


def _check_scores(meta: dict[str, Any], policy, groups: list[Group]) -> None:
    """Refuse a policy whose groups are scored by activations the trace does not hold."""
    for g in groups:
        if not g.pruned or policy.score_source(g.kind) != "own":
            continue
        if g.kind == "h" and not meta.get("has_h", True):
            raise DipsimError(f"masking {policy.name!r} scores the {g.name} group by |GLU(x)|, but the trace holds no "
                              f"h; capture it without --no-h")
        if g.kind == "g" and not meta.get("has_g", False):
            why = ("synthetic traces (dipsim synth) model x and h only" if is_synthetic(meta) else
                   "it was captured with --no-g or before dipsim recorded it; capture it again")
            raise DipsimError(f"masking {policy.name!r} scores neurons by the gate activation act(W_gate x), which the "
                              f"trace does not hold ({why}); or use score: glu, |h| as a replay-only stand-in")


def needs_gate_activations(cfg: ReplayConfig) -> bool:
    """Whether replay reads the trace's gate activations ``g`` for this configuration (cats, cats-ca)."""
    policy = cfg.policy()
    return policy.neuron_bundle is not None and policy.neuron_kind() == "g" and policy.score_source("g") == "own"


def needs_calibration(cfg: ReplayConfig) -> bool:
    """Whether replay must read a calibration prefix of the trace for this configuration."""
    return (masking_mod.REGISTRY.get_class(cfg.masking).needs_calibration or cfg.cache == "pinned"
            or alloc_mod.REGISTRY.get_class(cfg.allocation).needs_calibration
            or any(schedules.needs_scores(k) for k in (cfg.keep, cfg.keep_up, cfg.keep_gate, cfg.keep_down)))


def calibration_scores(trace: Trace, groups: list[Group], tokens: int) -> dict[str, np.ndarray]:
    """``|activations|`` of the first ``tokens`` tokens, ``[T, L, N]`` per group (those the trace holds)."""
    n = min(tokens, trace.n_tokens)
    held = {"x": True, "h": trace.has_h, "g": trace.has_g}
    blocks = {kind: trace.abs_block(kind, 0, n) for kind in sorted({g.kind for g in groups}) if held[kind]}
    return {g.name: blocks[g.kind] for g in groups if g.kind in blocks}


def calibration(trace: Trace, meta: dict[str, Any], cfg: ReplayConfig) -> dict[str, np.ndarray] | None:
    """The calibration prefix's scores a configuration needs (None when it needs none); the groups
    are decided first (cheap), so that only their activations are read."""
    return calibration_scores(trace, make_groups(meta, cfg), cfg.calib_tokens) if needs_calibration(cfg) else None
