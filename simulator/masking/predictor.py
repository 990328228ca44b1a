"""predictor: the columns a learned look-ahead predictor expects the layer to need (Deja Vu, Liu et
al., ICML 2023, arXiv 2310.17157; PowerInfer). The predicted set *is* the mask, so accuracy in the
loop pays for the predictor's misses.

Per token and layer l:
    down group:    logits = P_down[l](x[l-1])    (x[l-1]: the previous layer's MLP input; layer 0: x[0])
    up/gate group: top-k of |x[l]| (DIP's own, ``upgate="dip"``) or P_upgate[l](x[l-1]) (``"predict"``)
    mask = top-k of the logits (k from keep), or ``sigmoid(logit) > threshold`` (the count varies)

Predictors come from ``simulator.methods.predictor`` (a safetensors file, ``path``). ``oracle=True``
"predicts" the true top-k (|h[l]|, and |x[l]| with ``upgate="predict"``): DIP's masks, but available
as early as a real predictor's -- the perfect predictor, for the engine's prefetch tests.

The loops pass ``x[l-1]`` to groups whose :meth:`score_source` is ``"prev_x"`` (replay from the trace;
the layer-wise closed loop from the live forward), and :meth:`available_at` says when each group's
set is known, which is what prefetch needs. The token-by-token loop does not support it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from traces.errors import DipsimError

from ..kernels import topk_mask
from .base import MaskingPolicy, register_masking

UPGATE_MODES = ("dip", "predict")
_LOADED: dict[tuple[str, str], Any] = {}


def _predictor(path: str, pid: str):
    key = (path, pid)
    if key not in _LOADED:
        from ..methods.predictor import load_predictor

        pred = load_predictor(path)
        if pred.meta.get("id") != pid:
            raise DipsimError(f"predictor {path} changed since it was named (id {pred.meta.get('id')}, expected {pid})")
        _LOADED.clear()            # keep one predictor in memory
        _LOADED[key] = pred
    return _LOADED[key]


@register_masking("predictor")
@dataclass(frozen=True)
class PredictorPolicy(MaskingPolicy):
    path: str | None = None
    threshold: float | None = None
    oracle: bool = False
    upgate: str = "dip"
    predictor_id: str | None = None

    def __post_init__(self):
        if not isinstance(self.oracle, (bool, np.bool_)):
            raise DipsimError(f"predictor oracle must be true or false, got {self.oracle!r}")
        if self.upgate not in UPGATE_MODES:
            raise DipsimError(f"predictor upgate must be one of {', '.join(UPGATE_MODES)}, got {self.upgate!r}")
        if self.threshold is not None:
            try:
                t = float(self.threshold)
            except (TypeError, ValueError):
                raise DipsimError(f"predictor threshold must be a probability in (0, 1), got {self.threshold!r}") \
                    from None
            if not 0.0 < t < 1.0:
                raise DipsimError(f"predictor threshold must be a probability in (0, 1), got {t}")
            if self.oracle or self.upgate != "predict":
                raise DipsimError("predictor threshold needs every pruned group predicted: set upgate='predict' "
                                  "and oracle=false (DIP's own top-k has no probability to threshold)")
            object.__setattr__(self, "threshold", t)
        if self.oracle:
            return
        if self.path is None:
            raise DipsimError("masking 'predictor' needs path (a predictor file from simulator.methods.predictor) "
                              "or oracle=true")
        from ..methods.store import read_meta

        meta = read_meta(self.path, "predictor")
        if self.predictor_id is not None and self.predictor_id != meta["id"]:
            raise DipsimError(f"predictor {self.path} has id {meta['id']}, the configuration names "
                              f"{self.predictor_id} (the file changed)")
        object.__setattr__(self, "predictor_id", meta["id"])
        if self.upgate == "predict" and "upgate" not in meta.get("heads", []):
            raise DipsimError(f"predictor {self.path} has no upgate head (heads: {', '.join(meta.get('heads', []))}); "
                              f"train it with heads=('down', 'upgate') or use upgate='dip'")

    # -- where the scores come from --
    def score_source(self, kind: str) -> str:
        if self.oracle or (kind == "x" and self.upgate == "dip"):
            return "own"
        return "prev_x"

    def scores_from(self, layer: int, kind: str, prev_x: np.ndarray) -> np.ndarray:
        pred = _predictor(self.path, self.predictor_id)
        return pred.logits(layer, "down" if kind == "h" else "upgate", prev_x).astype(np.float32)

    def available_at(self, kind: str, layer: int) -> tuple[int, str]:
        """``(layer, point)`` after which the group's set for ``layer`` is known: ``"mlp_input"`` (the MLP
        input x of that layer is computed) or ``"glu_output"`` (h is). The oracle is available when a
        real predictor's set would be."""
        if kind == "h" or self.upgate == "predict":
            return max(layer - 1, 0), "mlp_input"
        return layer, "mlp_input"

    # -- choosing --
    def select_layer(self, layer, scores, k):
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        if self.threshold is not None:
            return scores > np.float32(math.log(self.threshold / (1.0 - self.threshold)))
        # logits are signed: the numpy top-k (the compiled one takes non-negative magnitudes only)
        return topk_mask(scores, np.full(scores.shape[0], int(k)))

    def _select(self, scores, resident, k):
        if self.threshold is not None:
            return scores > math.log(self.threshold / (1.0 - self.threshold))
        return topk_mask(scores, k)
