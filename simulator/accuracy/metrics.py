"""Per-position accuracy of every row against the dense row: NLL of the next text token, KL(dense ||
row) of the next-token distributions, and whether the arg-max matches.

The layer-wise loop holds each row's final hidden states for the whole text and scores them here in
chunks of positions, so that no ``[positions, vocabulary]`` array of all rows exists at once (a
1024-token SmolLM2 text is 200 MB of logits per row). Log-probabilities are taken in the model's
float type; each KL sum is accumulated in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import head_logits


@dataclass
class LoopResult:
    """Per row (0: the dense model) and per scored position: NLL, KL to row 0, top-1 agreement."""

    nll: np.ndarray          # [rows, scored] float64
    kl: np.ndarray           # [rows, scored] float64
    top1: np.ndarray         # [rows, scored] bool
    seconds: float
    logits: np.ndarray | None = None   # [scored, rows, vocab] float32 when asked for
    extra: dict[str, Any] = field(default_factory=dict)


def score_hidden(model, hidden: list, targets: np.ndarray, first: int, *, keep_logits: bool = False,
                 chunk: int = 64, dense: dict | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Score rows of final hidden states ``hidden[r]`` (``[positions, d_model]``; row 0 dense) at
    positions ``first .. first + len(targets) - 1``, whose next tokens are ``targets``.

    Returns ``nll, kl, top1`` (``[rows, scored]``) and, with ``keep_logits``, the logits
    ``[scored, rows, vocab]`` (float32). ``dense``: where the dense row's log-probabilities and
    arg-max are kept per chunk of positions (``session``: filled by the first call, read by the next
    with the same dense row; not with ``keep_logits``, which needs the dense logits themselves).
    """
    import torch

    R, S = len(hidden), len(targets)
    nll = np.zeros((R, S))
    kl = np.zeros((R, S))
    top1 = np.zeros((R, S), dtype=bool)
    logits_out = None
    tgt = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    with torch.inference_mode():
        for j0 in range(0, S, chunk):
            j1 = min(j0 + chunk, S)
            sl = slice(first + j0, first + j1)
            lp0 = None
            for r, h in enumerate(hidden):
                if r == 0 and dense is not None and not keep_logits and (sl.start, sl.stop) in dense:
                    lp, top = dense[sl.start, sl.stop]
                else:
                    lg = head_logits(model, h[sl])
                    if keep_logits:
                        if logits_out is None:
                            logits_out = np.zeros((S, R, lg.shape[-1]), np.float32)
                        logits_out[j0:j1, r] = lg.float().numpy()
                    lp = torch.log_softmax(lg, dim=-1)
                    top = lg.argmax(dim=-1)
                    if r == 0 and dense is not None and not keep_logits:
                        dense[sl.start, sl.stop] = (lp, top)
                if r == 0:
                    lp0, p0, top0 = lp, lp.exp(), top
                nll[r, j0:j1] = -lp.gather(1, tgt[j0:j1, None])[:, 0].double().numpy()
                kl[r, j0:j1] = (p0 * (lp0 - lp)).sum(dim=-1, dtype=torch.float64).numpy()
                top1[r, j0:j1] = (top == top0).numpy()
    return nll, kl, top1, logits_out
