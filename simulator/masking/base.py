"""Masking policy base class, registry and the exact top-k used by every policy.

A masking policy decides, per token, which weight columns of one matrix group each layer uses:

    mask = policy.select(scores, resident, k)
    # scores   [L, N] float  |x| (up/gate group) or |GLU(x)| (down group) of this token
    # resident [L, N] bool   which columns the layer's DRAM cache holds right now
    # k        int or [L] ints: columns to keep per layer
    # mask     [L, N] bool

Policies are immutable; the base class checks the arguments once and hands clean arrays to the
``_select`` hook of a subclass. Policies that learn from a calibration prefix (``threshold``,
``static``) return a calibrated copy from ``calibrate``. Ties break deterministically: among equal
scores the lowest column index wins.

The layer-wise loops (replay, the closed loop) take one layer through all tokens at once:

    masks, hits = policy.run_layer(layer, scores, k, cache)   # scores [T, N]; cache steps T times

A cache-oblivious policy chooses all ``T`` masks in one vectorized ``select_layer`` and the cache
then steps through them; a cache-aware one (``dip-ca``) hands the cache a ``LayerSelector`` so that
choice and step alternate token by token, in one compiled loop when the policy has a
``row_rule`` (see ``simulator.kernels.select_row``).

**Columns or neurons.** Most policies select *columns*: of W_up/W_gate by input index (the
``upgate`` group, d_model of them) and of W_down by d_ff index (``down``). A neuron-level policy
(``neuron_bundle`` set: CATS, Deja Vu, PowerInfer) selects *neurons* instead: index i of d_ff, for
which row i of W_gate and W_up and column i of W_down are needed together or not at all -- one
``neuron`` group whose column is the bundle (``("gate", "up", "down")``, or ``("up", "down")`` where
W_gate is computed densely, which replay then keeps as a dense ``gate`` group). Its scores are the
activations of ``neuron_kind()``: ``"g"`` (the gate activation act(W_gate x)) or ``"h"`` (the GLU
output, what a predictor of active neurons is trained to predict).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from common.errors import DipsimError

from ..kernels import LayerSelector
from common.params import params_of, per_layer_ints
from common.registry import Registry, check_params

REGISTRY = Registry("masking policy")
register_masking = REGISTRY.register
names = REGISTRY.names


def policy_params(cls: type) -> list[str]:
    """The parameters a user gives a policy (declared with ``common.params.param``); calibrated state
    such as threshold's thresholds is not one."""
    return sorted(f.name for f in params_of(cls))


def parameters(name: str) -> list[str]:
    """The parameters of the registered policy ``name`` (unknown names refused, the valid ones listed)."""
    return policy_params(REGISTRY.get_class(name))


def make(name: str, **params: Any) -> "MaskingPolicy":
    """Build a registered policy; unknown names and parameters are refused with the valid ones listed."""
    cls = REGISTRY.get_class(name)
    check_params("masking policy", name, params, policy_params(cls))
    return cls(**params)


def calibration_prefix(prefix: Any, policy: str) -> np.ndarray:
    """A calibration prefix of scores ``[T, L, N]`` (float32), or a one-line error."""
    prefix = np.asarray(prefix, dtype=np.float32)
    if prefix.ndim != 3 or prefix.shape[0] == 0:
        raise DipsimError(f"{policy} calibration needs a non-empty prefix of scores [tokens, layers, columns]")
    return prefix


def as_k(k: Any, L: int, N: int) -> np.ndarray:
    """``k`` as an int array of one value per layer, checked against ``0 <= k <= N``."""
    arr = per_layer_ints(k, L, "k")
    if (arr < 0).any() or (arr > N).any():
        bad = int(arr[(arr < 0) | (arr > N)][0])
        raise DipsimError(f"k = {bad} out of range: a layer has {N} columns, so 0 <= k <= {N}")
    return arr


@dataclass(frozen=True)
class MaskingPolicy:
    """Base of all masking policies (see the module docstring for the contract)."""

    name: ClassVar[str] = "?"
    #: the choice depends on the cache state (no offline cache oracle, no one-pass miss-ratio curve)
    cache_aware: ClassVar[bool] = False
    #: groups this policy prunes; the others stay dense ("upgate" = W_up/W_gate columns, "down")
    prunes: ClassVar[tuple[str, ...]] = ("upgate", "down")
    #: needs calibrate() on a trace prefix before select()
    needs_calibration: ClassVar[bool] = False
    #: a neuron-level policy: the matrices of one neuron's bundle (see the module doc); None: columns
    neuron_bundle: ClassVar[tuple[str, ...] | None] = None
    #: the cache policies the method is defined with (None: any); others are refused (powerinfer: pinned)
    cache_policies: ClassVar[tuple[str, ...] | None] = None

    def __post_init__(self):
        for f in params_of(type(self)):     # every parameter checked by its own declaration
            object.__setattr__(self, f.name, f.metadata["check"](getattr(self, f.name), f"{self.name} {f.name}"))

    def select(self, scores: np.ndarray, resident: np.ndarray | None, k: Any) -> np.ndarray:
        scores = np.asarray(scores)
        if scores.ndim != 2:
            raise DipsimError(f"scores must be [layers, columns], got shape {list(scores.shape)}")
        L, N = scores.shape
        if resident is None:
            resident = np.zeros((L, N), dtype=bool)
        resident = np.asarray(resident)
        if resident.shape != (L, N) or resident.dtype != bool:
            raise DipsimError(f"resident must be a bool array of shape {[L, N]}, got {resident.dtype} "
                              f"{list(resident.shape)}")
        return self._select(scores, resident, as_k(k, L, N))

    def _select(self, scores: np.ndarray, resident: np.ndarray, k: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def calibrate(self, prefix: np.ndarray, k: Any) -> "MaskingPolicy":
        """A copy fitted to a calibration prefix ``[T, L, N]`` of scores; stateless policies return self."""
        return self

    def loop_refusal(self) -> str | None:
        """Why this policy cannot run in the closed loop on a real model (None: it can)."""
        return None

    def neuron_kind(self) -> str:
        """Which activations score a neuron policy's ``neuron`` group (``"g"`` or ``"h"``)."""
        return "h"

    def hot_scores(self, prefix: np.ndarray, k: Any) -> np.ndarray:
        """``[L, N]``: how hot each column is on a calibration prefix ``[T, L, N]`` of scores, what a
        cache with a static hot set (``pinned``) pins the top of: the mean score by default."""
        return np.asarray(prefix).mean(axis=0)

    # -- one layer through all tokens (replay and the closed loop) --
    def run_layer(self, layer: int, scores: np.ndarray, k: int, cache) -> tuple[np.ndarray, np.ndarray]:
        """Masks ``[T, N]`` of ``layer`` for ``T`` tokens' ``scores`` and the hits of ``cache``
        (a ``caches.CachePolicy``, stepped ``T`` times in that layer): the same as ``T`` calls of
        ``select`` for that layer, each followed by the cache's step."""
        if not self.cache_aware:
            masks = self.select_layer(layer, scores, k)
            return masks, cache.run_layer(layer, masks)
        one = self.rows(layer, layer + 1)
        kk = np.array([k], dtype=np.int64)
        sel = LayerSelector(scores, int(k), one.row_rule(),
                            lambda s, r: one._select(s[None], r[None], kk)[0])
        return cache.run_layer_selecting(layer, sel)

    def select_layer(self, layer: int, scores: np.ndarray, k: int) -> np.ndarray:
        """Masks ``[T, N]`` of ``layer`` for ``T`` tokens, for a cache-oblivious policy. The default
        runs ``select`` token by token; policies override it with one vectorized call."""
        scores = np.asarray(scores)
        one = self.rows(layer, layer + 1)
        return np.concatenate([one.select(scores[t:t + 1], None, int(k)) for t in range(scores.shape[0])]) \
            if scores.shape[0] else np.zeros(scores.shape, dtype=bool)

    def check_trace(self, meta: dict[str, Any]) -> None:
        """Refuse a trace this policy cannot run on (a predictor trained for another model); called
        with the trace's metadata before any work."""

    def score_source(self, kind: str) -> str:
        """Which activations the loops score a group of ``kind`` (``"x"``: up/gate, ``"h"``: down or
        neurons, ``"g"``: neurons by the gate activation) by:
        ``"own"`` -- ``|x|`` / ``|h|`` of the layer itself (every policy but a look-ahead predictor);
        ``"prev_x"`` -- the raw MLP input of the previous layer (layer 0: its own), turned into scores by
        :meth:`scores_from` (``masking/predictor.py``). Replay and the layer-wise closed loop honour it."""
        return "own"

    def available_at(self, kind: str, layer: int) -> tuple[int, str]:
        """``(layer, point)`` after which the set of group ``kind`` at ``layer`` is known: ``"mlp_input"``
        (x of that layer exists) or ``"glu_output"`` (h does). Own-activation policies know a layer's
        sets in that layer; a look-ahead predictor knows them a layer earlier, which the engine's
        prefetch uses (``engine/lookahead.py``)."""
        return layer, "mlp_input" if kind == "x" else "glu_output"

    def scores_from(self, layer: int, kind: str, prev_x: np.ndarray) -> np.ndarray:
        """Scores ``[T, N]`` of a ``"prev_x"`` group from ``prev_x [T, d_model]`` (see :meth:`score_source`)."""
        raise NotImplementedError

    def row_rule(self) -> tuple[int, np.ndarray] | None:
        """The compiled per-token rule ``(kernels.SELECT_* code, float64 params)`` of a cache-aware
        policy, or None (the cache then calls the policy's Python ``select`` per token). Asked of the
        one-layer policy (``rows(layer, layer + 1)``), so its parameters may be per layer."""
        return None

    def rows(self, l0: int, l1: int) -> "MaskingPolicy":
        """The policy for layers ``l0:l1`` alone (replay runs layer ranges in parallel threads).

        Stateless policies return themselves; calibrated ones slice their per-layer state."""
        return self

    def params(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in policy_params(type(self))}
