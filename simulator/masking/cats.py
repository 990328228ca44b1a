"""cats: Contextually-Aware Thresholding for Sparsity (Lee et al., arXiv 2404.08763) -- neurons kept
where the gate activation is large; W_gate computed densely, only the kept rows of W_up and columns
of W_down read.

Calibration, per layer l, over the prefix's T*N gate activations |act(W_gate x)| of that layer:
    tau[l] = the (1 - keep[l]) quantile                   (keep[l] = k[l] / N, N = d_ff)
Per token:
    a      = act(W_gate x)                                (dense: every row of W_gate)
    keep neuron i where |a_i| > tau[l]                    (the count varies with the token)
    h_i    = a_i * (W_up x)_i for kept i, 0 otherwise     (row i of W_up read only for kept i)
    y      = W_down h                                     (column i of W_down read only for kept i)

So replay sees two groups: ``gate`` (W_gate, dense: every column every token, cached like any
group) and ``neuron`` (index d_ff; one neuron = row i of W_up and column i of W_down, cached and read
together, ``2 x d_model`` weights). The closed loop zeroes h outside the kept neurons, which is
exactly what skipping the rows and columns computes.

Scores come from the trace's gate activations (``g``, recorded by ``dipsim trace`` since this
version). Traces without them -- captured before, with ``--no-g``, or synthetic (``dipsim synth``
models x and h only) -- can use ``score: glu``, which thresholds |h| instead: a stand-in that keeps
the neurons contributing most, a different (stronger) selection than CATS makes, and one no runtime
could compute without reading all of W_up; replay only (the closed loop refuses it).
"""
from __future__ import annotations

from dataclasses import dataclass

from common.params import choice, param

from .base import register_masking
from .threshold import Threshold

SCORES = ("gate", "glu")


@register_masking("cats")
@dataclass(frozen=True)
class CATS(Threshold):
    score: str = param("gate", choice(*SCORES, kind="cats score"),
                       "cats, cats-ca: what the threshold applies to: gate (|act(W_gate x)|, the paper's) or glu "
                       "(|h|, a replay-only stand-in for traces without gate activations: synthetic and older "
                       "traces)", metavar="S")

    prunes = ("neuron",)
    neuron_bundle = ("up", "down")

    def neuron_kind(self) -> str:
        return "g" if self.score == "gate" else "h"

    def loop_refusal(self):
        if self.score == "glu":
            return (f"{self.name} score glu is a replay-only stand-in for traces without gate activations; the "
                    f"model in the loop has them: use score gate")
        return None
