"""predictor: the columns a learned look-ahead predictor expects the layer to need (Deja Vu, Liu et
al., ICML 2023, arXiv 2310.17157), applied to DIP's column groups. The predicted set *is* the mask,
so accuracy in the loop pays for the predictor's misses. (Deja Vu itself selects neurons: that is
the ``dejavu`` policy.)

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

from dataclasses import dataclass

import numpy as np

from common.errors import DipsimError
from common.params import choice, param

from .base import register_masking
from .lookahead import LookaheadPolicy

UPGATE_MODES = ("dip", "predict")


@register_masking("predictor")
@dataclass(frozen=True)
class PredictorPolicy(LookaheadPolicy):
    upgate: str = param("dip", choice(*UPGATE_MODES, kind="predictor upgate mode"),
                        "predictor: up/gate by DIP's own top-k of |x| (dip) or by the predictor (predict)",
                        metavar="MODE")

    def check_threshold(self):
        if self.threshold is not None and (self.oracle or self.upgate != "predict"):
            raise DipsimError("predictor threshold needs every pruned group predicted: set upgate='predict' "
                              "and oracle=false (DIP's own top-k has no probability to threshold)")

    def check_heads(self, heads):
        if self.upgate == "predict" and "upgate" not in heads:
            raise DipsimError(f"predictor {self.predictor_file} has no upgate head (heads: {', '.join(heads)}); "
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
        return self.predictor().logits(layer, "down" if kind == "h" else "upgate", prev_x).astype(np.float32)

    def available_at(self, kind: str, layer: int) -> tuple[int, str]:
        """``(layer, point)`` after which the group's set for ``layer`` is known: ``"mlp_input"`` (the MLP
        input x of that layer is computed) or ``"glu_output"`` (h is). The oracle is available when a
        real predictor's set would be."""
        if kind == "h" or self.upgate == "predict":
            return max(layer - 1, 0), "mlp_input"
        return layer, "mlp_input"
