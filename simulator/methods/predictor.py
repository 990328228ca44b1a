"""Look-ahead predictors of the columns a layer will need (Deja Vu, Liu et al., "Deja Vu: Contextual
Sparsity for Efficient LLMs at Inference Time", ICML 2023; PowerInfer uses the same kind of predictor).

Per layer ``l`` and head (``down``: the d_ff columns of W_down; optionally ``upgate``: the d_model
columns of W_up/W_gate), a two-layer MLP ``d_model -> r -> N`` (ReLU between, as Deja Vu's MLP
predictors) maps the *previous* layer's MLP input ``x[l-1]`` to one logit per column; trained with
binary cross-entropy against membership in the true top-k (``keep``) of ``|h[l]|`` (or ``|x[l]|``).
``x[l-1]`` is known a whole layer before DIP's own score ``|h[l]|`` (which needs layer ``l``'s
attention, then W_up/W_gate), so the predicted columns can be prefetched from flash while layers
``l-1`` and ``l`` compute (Deja Vu's "asynchronous look-ahead"). Layer 0 has no earlier MLP input:
its predictor reads ``x[0]`` (still before ``h[0]``, but without the layer of look-ahead). Inputs are
standardized per feature with the training tokens' mean and deviation (RMSNorm outputs have a few
large-magnitude features). Rank ``r`` defaults to 64 (the issue's default; Deja Vu used a hidden
size of 1000 for OPT-175B's 12288-wide model).

Training data: a trace (``traces.capture``) of the learning text (``methods.data``: never the
evaluation text), split by token position: the first ``train_fraction`` trains, the rest is held
out and reported (recall and precision of the predicted set against the true top-k, per layer).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError


from ..masking.lookahead import HEADS, Predictor, load_predictor  # noqa: F401  (re-exported)
from . import data


def default_path(trace_path: str | os.PathLike, rank: int, heads) -> Path:
    """``<trace>.predictor-r<rank>[-upgate].safetensors`` beside the trace."""
    p = Path(trace_path)
    return p.with_name(f"{p.stem}.predictor-r{rank}{'-upgate' if 'upgate' in heads else ''}.safetensors")


def capture_training_trace(lm, out: str | os.PathLike, tokens: int = 8192, *, offset: int | None = None,
                           corpus=None, context: int = 512, progress: bool = False) -> Path:
    """Capture a trace of the learning text (``methods.data``: after ``offset``, checked disjoint from the
    evaluation text) to ``out``: what a predictor trains on, so it never sees the evaluated tokens."""
    import tempfile

    from traces.capture import capture


    learn = data.training_corpus(corpus, data.TRAIN_OFFSET if offset is None else offset, tokenizer=lm.tokenizer)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "learning-text.txt"
        f.write_text(learn.text, encoding="utf-8")
        # a predictor learns h from x: the gate activations would only double the file
        return capture(lm, out, tokens=tokens, text=f, context=context, with_g=False, progress=progress)


def _targets(acts: np.ndarray, k: int, absolute: bool = True) -> np.ndarray:
    """Top-k membership of ``|acts|`` (or of the signed values) per row (float32 0/1)."""
    a = np.asarray(acts, np.float32)
    a = np.abs(a) if absolute else a
    idx = np.argpartition(-a, k - 1, axis=1)[:, :k]
    out = np.zeros(a.shape, np.float32)
    np.put_along_axis(out, idx, 1.0, axis=1)
    return out


def _fit_layer(z, y, rank: int, epochs: int, lr: float, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Train one two-layer predictor ``z [T, d] -> y [T, N]`` with BCE (Adam); numpy parameters out."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    d, n = z.shape[1], y.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(d, rank), torch.nn.ReLU(), torch.nn.Linear(rank, n))
    with torch.no_grad():
        for m in (net[0], net[2]):
            bound = 1.0 / np.sqrt(m.in_features)
            m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
            m.bias.zero_()
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(zt.shape[0], generator=gen)
            for b in range(0, zt.shape[0], batch):
                i = perm[b:b + batch]
                loss = loss_fn(net(zt[i]), yt[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return {"w1": net[0].weight.detach().numpy().copy(), "b1": net[0].bias.detach().numpy().copy(),
            "w2": net[2].weight.detach().numpy().copy(), "b2": net[2].bias.detach().numpy().copy()}


def _check_args(rank, keep, train_fraction, epochs, heads) -> tuple:
    data.check_int("rank", rank, 1)
    if not 0.0 < float(keep) <= 1.0:
        raise DipsimError(f"keep must be in (0, 1], got {keep!r}")
    if not 0.0 < float(train_fraction) < 1.0:
        raise DipsimError(f"train_fraction must be in (0, 1) (the rest is held out), got {train_fraction!r}")
    data.check_int("epochs", epochs, 1)
    heads = tuple(heads)
    if not heads or any(h not in HEADS for h in heads):
        raise DipsimError(f"heads must be a non-empty list of {', '.join(HEADS)}, got {list(heads)}")
    return heads


def _layer_data(trace, layer: int, head: str, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw previous-layer x, own activations scored by ``head``) for tokens ``t0:t1``."""
    prev = np.asarray(trace.x(max(layer - 1, 0))[t0:t1], np.float32)
    own = trace.h(layer) if head == "down" else trace.x(layer)
    return prev, np.asarray(own[t0:t1], np.float32)


def train_predictor(trace, *, rank: int = 64, keep: float = 0.5, heads=("down",), train_fraction: float = 0.7,
                    epochs: int = 20, lr: float = 1e-3, batch: int = 256, seed: int = 0,
                    progress: bool = False) -> Predictor:
    """Train a predictor per layer and head on the first ``train_fraction`` of ``trace``'s tokens and
    report its recall and precision on the rest (``meta['held_out']``)."""
    heads = _check_args(rank, keep, train_fraction, epochs, heads)
    if "down" in heads and not trace.has_h:
        raise DipsimError(f"{trace.name}: the down head learns from h, but the trace holds no h")
    t_start = time.perf_counter()
    L, T = trace.n_layers, trace.n_tokens
    n_train = int(T * float(train_fraction))
    if n_train < 16 or T - n_train < 16:
        raise DipsimError(f"{trace.name}: {T} tokens leave too few for training and held-out tokens (>= 16 each)")
    params: dict[str, np.ndarray] = {"mu": np.zeros((L, trace.d_model), np.float32),
                                     "sd": np.ones((L, trace.d_model), np.float32)}
    for src in range(L):
        x = np.asarray(trace.x(src)[:n_train], np.float32)
        params["mu"][src] = x.mean(axis=0)
        params["sd"][src] = x.std(axis=0) + 1e-6
    for head in heads:
        n_cols = trace.d_ff if head == "down" else trace.d_model
        k = max(1, int(round(float(keep) * n_cols)))
        for layer in range(L):
            prev, own = _layer_data(trace, layer, head, 0, n_train)
            z = (prev - params["mu"][max(layer - 1, 0)]) / params["sd"][max(layer - 1, 0)]
            fit = _fit_layer(z, _targets(own, k), rank, epochs, lr, batch, seed + layer)
            params.update({f"{head}.{layer}.{n}": v for n, v in fit.items()})
            if progress:
                print(f"predictor {head} layer {layer} trained ({time.perf_counter() - t_start:.0f} s)", flush=True)
    meta = {k: trace.meta.get(k) for k in ("model", "n_layers", "d_model", "d_ff", "corpus", "corpus_digest")}
    meta.update(rank=rank, keep=float(keep), heads=list(heads), input="prev_x", train_tokens=[0, n_train],
                held_out_tokens=[n_train, T], trace=str(getattr(trace, "path", None) or trace.name), epochs=epochs,
                lr=lr, batch=batch, seed=seed)
    pred = Predictor(params, meta=meta)
    pred.meta["held_out"] = evaluate_predictor(pred, trace, n_train, T, keep)
    pred.meta["seconds"] = time.perf_counter() - t_start
    return pred


def evaluate_predictor(pred: Predictor, trace, t0: int, t1: int, keep: float = 0.5,
                       threshold: float | None = None) -> dict[str, Any]:
    """Recall and precision of the predicted sets against the true top-``keep`` sets on tokens ``t0:t1``,
    per head and layer (and the mean). At equal size (top-k, the default) recall equals precision;
    with ``threshold`` (a probability) the predicted set is ``sigmoid(logit) > threshold`` and its
    size varies. ``chance``: the recall of k random columns (= keep). ``mass``: activation mass (sum of
    |a|) of the predicted set over that of the true top-k -- how much of what DIP keeps the prediction
    keeps (1 for the oracle, below 1 for any other set of k columns, above 1 possible for larger sets)."""
    out: dict[str, Any] = {"tokens": [int(t0), int(t1)], "keep": float(keep), "threshold": threshold}
    for head in pred.heads:
        n_cols = trace.d_ff if head == "down" else trace.d_model
        k = max(1, int(round(float(keep) * n_cols)))
        rec, prec, size, mass = [], [], [], []
        for layer in range(trace.n_layers):
            prev, own = _layer_data(trace, layer, head, t0, t1)
            guess = predict_sets(pred, layer, head, prev, k, threshold)
            truth = _targets(own, k).astype(bool)
            hit = np.count_nonzero(guess & truth, axis=1)
            rec.append(float(np.mean(hit / k)))
            prec.append(float(np.mean(hit / np.maximum(np.count_nonzero(guess, axis=1), 1))))
            size.append(float(np.mean(np.count_nonzero(guess, axis=1)) / n_cols))
            a = np.abs(own)
            mass.append(float(np.mean((a * guess).sum(1) / np.maximum((a * truth).sum(1), 1e-30))))
        out[head] = {"recall": rec, "precision": prec, "set_fraction": size, "mass": mass,
                     "mean_recall": float(np.mean(rec)), "mean_precision": float(np.mean(prec)),
                     "mean_set_fraction": float(np.mean(size)), "mean_mass": float(np.mean(mass)),
                     "chance": float(k / n_cols)}
    return out


def predict_sets(pred: Predictor, layer: int, head: str, prev_x: np.ndarray, k: int,
                 threshold: float | None = None) -> np.ndarray:
    """``[T, N]`` bool: the predicted columns of ``layer`` per token -- the top-``k`` logits, or those with
    ``sigmoid(logit) > threshold`` -- from the previous layer's MLP input. What an engine prefetches."""
    logit = pred.logits(layer, head, prev_x)
    if threshold is None:
        return _targets(logit, k, absolute=False).astype(bool)
    if not 0.0 < float(threshold) < 1.0:
        raise DipsimError(f"threshold must be a probability in (0, 1), got {threshold!r}")
    return logit > np.log(threshold / (1.0 - threshold))
