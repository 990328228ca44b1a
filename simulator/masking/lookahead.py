"""A look-ahead predictor's weights and its scores, and the base of the policies that run one
(``predictor``: DIP's columns; ``dejavu`` and ``powerinfer``: neurons).

Trained by ``simulator.methods.predictor`` (which saves it); kept here, below the methods, because a
masking policy must load and evaluate it without the training code. The file format is
``common.store``'s (safetensors + JSON metadata with a content id).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import store
from common.errors import DipsimError
from common.params import boolean, number, param, text

from ..kernels import topk_mask, topk_rows
from .base import MaskingPolicy

HEADS = ("down", "upgate")
_LOADED: dict[tuple[str, str], Any] = {}


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


def loaded_predictor(path: str, pid: str) -> Predictor:
    """The predictor in ``path`` (one kept in memory), refused if its content id is not ``pid``."""
    key = (path, pid)
    if key not in _LOADED:
        pred = load_predictor(path)
        if pred.meta.get("id") != pid:
            raise DipsimError(f"predictor {path} changed since it was named (id {pred.meta.get('id')}, expected {pid})")
        _LOADED.clear()            # keep one predictor in memory
        _LOADED[key] = pred
    return _LOADED[key]


@dataclass(frozen=True)
class LookaheadPolicy(MaskingPolicy):
    """A policy whose sets come from a learned look-ahead predictor (``predictor_file``) fed by the
    previous layer's MLP input, or with ``oracle`` from the true top-k of the layer's own scores. The
    predicted set is the mask: the top-k of the logits, or ``sigmoid(logit) > threshold``."""

    predictor_file: Any = param(None, text(), "predictor, dejavu, powerinfer: the look-ahead predictor's file "
                                              "(simulator.methods.predictor)", metavar="FILE")
    threshold: Any = param(None, number(0, 1, lo_open=True, hi_open=True, optional=True),
                           "predictor, dejavu, powerinfer: keep what the predicted probability puts above this "
                           "(default: the top keep of the logits)", metavar="P")
    oracle: bool = param(False, boolean, "predictor, dejavu, powerinfer: predict the true top-k (known as early as a "
                                         "predictor's set: the perfect predictor)", metavar="true|false")
    predictor_id: Any = param(None, text(), "the predictor file's content id (filled in; a changed file is refused)",
                              cli=False)

    def __post_init__(self):
        super().__post_init__()
        self.check_threshold()
        if self.oracle:
            return
        if self.predictor_file is None:
            raise DipsimError(f"masking {self.name!r} needs predictor_file (from simulator.methods.predictor) "
                              f"or oracle=true")
        meta = store.read_meta(self.predictor_file, "predictor")
        if self.predictor_id is not None and self.predictor_id != meta["id"]:
            raise DipsimError(f"predictor {self.predictor_file} has id {meta['id']}, the configuration names "
                              f"{self.predictor_id} (the file changed)")
        object.__setattr__(self, "predictor_id", meta["id"])
        self.check_heads(meta.get("heads", []))

    def check_threshold(self) -> None:
        if self.threshold is not None and self.oracle:
            raise DipsimError(f"{self.name} threshold needs a real predictor (oracle=false): the true top-k has no "
                              f"probability to threshold")

    def check_heads(self, heads: list[str]) -> None:
        """Refuse a predictor file that lacks a head this policy needs."""

    def predictor(self) -> Predictor:
        return loaded_predictor(self.predictor_file, self.predictor_id)

    def select_layer(self, layer, scores, k):
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        if self.threshold is not None:
            return scores > np.float32(math.log(self.threshold / (1.0 - self.threshold)))
        if self.oracle:     # the layer's own magnitudes: the compiled top-k (the same masks)
            out = np.empty(scores.shape, dtype=bool)
            topk_rows(scores, int(k), out)
            return out
        # logits are signed: the numpy top-k (the compiled one takes non-negative magnitudes only)
        return topk_mask(scores, np.full(scores.shape[0], int(k)))

    def _select(self, scores, resident, k):
        if self.threshold is not None:
            return scores > math.log(self.threshold / (1.0 - self.threshold))
        return topk_mask(scores, k)
