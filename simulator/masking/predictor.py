"""predictor: the columns a learned look-ahead predictor expects the layer to need (Deja Vu, Liu et
al., ICML 2023, arXiv 2310.17157; PowerInfer). The predicted set *is* the mask, so accuracy in the
loop pays for the predictor's misses.

Per token and layer l:
    down group:    logits = P_down[l](x[l-1])    (x[l-1]: the previous layer's MLP input; layer 0: x[0])
    up/gate group: top-k of |x[l]| (DIP's own, ``upgate="dip"``) or P_upgate[l](x[l-1]) (``"predict"``)
    mask = top-k of the logits (k from keep), or ``sigmoid(logit) > threshold`` (the count varies)

Predictors come from ``simulator.methods.predictor`` (a safetensors file, ``predictor_file``). ``oracle=True``
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

from common.errors import DipsimError
from common.params import boolean, choice, number, param, text

from ..kernels import topk_mask
from .base import MaskingPolicy, register_masking

UPGATE_MODES = ("dip", "predict")
_LOADED: dict[tuple[str, str], Any] = {}


def _predictor(path: str, pid: str):
    key = (path, pid)
    if key not in _LOADED:
        from .lookahead import load_predictor

        pred = load_predictor(path)
        if pred.meta.get("id") != pid:
            raise DipsimError(f"predictor {path} changed since it was named (id {pred.meta.get('id')}, expected {pid})")
        _LOADED.clear()            # keep one predictor in memory
        _LOADED[key] = pred
    return _LOADED[key]


@register_masking("predictor")
@dataclass(frozen=True)
class PredictorPolicy(MaskingPolicy):
    predictor_file: Any = param(None, text(), "predictor: the look-ahead predictor's file (simulator.methods."
                                              "predictor)", metavar="FILE")
    threshold: Any = param(None, number(0, 1, lo_open=True, hi_open=True, optional=True),
                           "predictor: keep the columns whose predicted probability exceeds this (default: the "
                           "top keep of the logits)", metavar="P")
    oracle: bool = param(False, boolean, "predictor: predict the true top-k (DIP's masks, known as early as a "
                                         "predictor's: the perfect predictor)", metavar="true|false")
    upgate: str = param("dip", choice(*UPGATE_MODES, kind="predictor upgate mode"),
                        "predictor: up/gate by DIP's own top-k of |x| (dip) or by the predictor (predict)",
                        metavar="MODE")
    predictor_id: Any = param(None, text(), "predictor: the file's content id (filled in; a changed file is refused)",
                              cli=False)

    def __post_init__(self):
        super().__post_init__()
        if self.threshold is not None and (self.oracle or self.upgate != "predict"):
            raise DipsimError("predictor threshold needs every pruned group predicted: set upgate='predict' "
                              "and oracle=false (DIP's own top-k has no probability to threshold)")
        if self.oracle:
            return
        if self.predictor_file is None:
            raise DipsimError("masking 'predictor' needs predictor_file (from simulator.methods.predictor) "
                              "or oracle=true")
        from common.store import read_meta

        meta = read_meta(self.predictor_file, "predictor")
        if self.predictor_id is not None and self.predictor_id != meta["id"]:
            raise DipsimError(f"predictor {self.predictor_file} has id {meta['id']}, the configuration names "
                              f"{self.predictor_id} (the file changed)")
        object.__setattr__(self, "predictor_id", meta["id"])
        if self.upgate == "predict" and "upgate" not in meta.get("heads", []):
            raise DipsimError(f"predictor {self.predictor_file} has no upgate head (heads: {', '.join(meta.get('heads', []))}); "
                              f"train it with heads=('down', 'upgate') or use upgate='dip'")

    def check_trace(self, meta: dict[str, Any]) -> None:
        if self.predictor_file is not None and not self.oracle:
            from common.store import check_made_for, read_meta

            dims = {k: meta[k] for k in ("model", "n_layers", "d_model", "d_ff") if k in meta}
            check_made_for(read_meta(self.predictor_file, "predictor"), dims, f"predictor {self.predictor_file}")

    # -- where the scores come from --
    def score_source(self, kind: str) -> str:
        if self.oracle or (kind == "x" and self.upgate == "dip"):
            return "own"
        return "prev_x"

    def scores_from(self, layer: int, kind: str, prev_x: np.ndarray) -> np.ndarray:
        pred = _predictor(self.predictor_file, self.predictor_id)
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
