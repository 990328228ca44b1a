"""A look-ahead predictor's weights and its scores: what the ``predictor`` masking policy runs.

Trained by ``simulator.methods.predictor`` (which saves it); kept here, below the methods, because a
masking policy must load and evaluate it without the training code. The file format is
``common.store``'s (safetensors + JSON metadata with a content id).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from common import store
from common.errors import DipsimError

HEADS = ("down", "upgate")


@dataclass
class Predictor(store.MethodObject):
    """Per ``(head, layer)``: ``w1 [r, d_model]``, ``b1 [r]``, ``w2 [N, r]``, ``b2 [N]`` (float32 numpy);
    ``mu``, ``sd`` ``[L, d_model]``: input standardization per source layer; ``meta``."""

    KIND = "predictor"
    params: dict[str, np.ndarray]

    @property
    def heads(self) -> list[str]:
        return list(self.meta["heads"])

    def logits(self, layer: int, head: str, prev_x: np.ndarray) -> np.ndarray:
        """``[T, N]`` logits of ``head`` at ``layer`` from the raw (signed) previous-layer MLP input
        ``prev_x [T, d_model]`` (for layer 0: its own ``x``)."""
        if head not in self.heads:
            raise DipsimError(f"this predictor has no {head!r} head; it has {', '.join(self.heads)}")
        p, src = self.params, max(layer - 1, 0)
        z = (np.asarray(prev_x, np.float32) - p["mu"][src]) / p["sd"][src]
        hid = np.maximum(z @ p[f"{head}.{layer}.w1"].T + p[f"{head}.{layer}.b1"], 0.0)
        return hid @ p[f"{head}.{layer}.w2"].T + p[f"{head}.{layer}.b2"]

    def file_tensors(self) -> dict[str, np.ndarray]:
        return self.params


def load_predictor(path: str | os.PathLike) -> Predictor:
    params, meta = store.load(path, "predictor")
    meta["path"] = str(path)
    return Predictor(params, meta=meta)
