"""dejavu: Deja Vu's contextual sparsity on the MLP (Liu et al., ICML 2023, arXiv 2310.17157) --
neurons predicted a layer ahead by a small learned predictor, only theirs read.

Per token and layer l (N = d_ff neurons):
    logits = P[l](x[l-1])        (x[l-1]: the previous layer's MLP input, known a whole layer early;
                                  layer 0: its own x)
    mask   = top-k of the logits (k = keep x N), or sigmoid(logit) > threshold
    neuron i kept: row i of W_gate and W_up and column i of W_down are read and computed;
    the others contribute nothing (h_i = 0)

One ``neuron`` group, a neuron being its gate row, up row and down column (``3 x d_model`` weights,
read as one contiguous bundle with ``layout.neurons: bundled``). The predictor is the ``down`` head
of a ``simulator.methods.predictor`` file: per layer a ``d_model -> r -> d_ff`` MLP trained on the
model's own activations to predict the top-``keep`` neurons by |h| (Deja Vu's own target on a ReLU
model is "non-zero"; a SwiGLU neuron is never exactly zero, so "among the largest |h|" stands in).
Because the set is known at the previous layer's MLP input, the engine issues its reads a layer
ahead (``available_at``; ``engine/lookahead.py``): Deja Vu's asynchronous look-ahead.

``oracle: true`` takes the true top-k of |h| instead (no file): the perfect predictor, as early as a
real one -- also what a synthetic trace, whose x and h carry no information about each other, can
run (a predictor trained on it would learn nothing but frequencies).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import register_masking
from .lookahead import LookaheadPolicy


@register_masking("dejavu")
@dataclass(frozen=True)
class DejaVu(LookaheadPolicy):
    prunes = ("neuron",)
    neuron_bundle = ("gate", "up", "down")

    def neuron_kind(self) -> str:
        return "h"

    def score_source(self, kind: str) -> str:
        return "own" if self.oracle else "prev_x"

    def scores_from(self, layer: int, kind: str, prev_x: np.ndarray) -> np.ndarray:
        return self.predictor().logits(layer, "down", prev_x).astype(np.float32)

    def available_at(self, kind: str, layer: int) -> tuple[int, str]:
        """The neurons of ``layer`` are known at the previous layer's MLP input (layer 0: its own); the
        policy has no group in the up/gate stage (``kind`` "x")."""
        return (layer, "mlp_input") if kind == "x" else (max(layer - 1, 0), "mlp_input")
