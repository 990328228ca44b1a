"""``evaluate``: closed-loop accuracy and cache figures of configurations on a real model.

Tokens and metrics (the convention of ``traces.capture``): the sequence is the prefix token
(``prefix_token``, resolved by ``traces.prefix``; by default the model's own convention, which for
SmolLM2 and Qwen2.5 is none and for Gemma-3 ``<bos>``) followed by the first ``tokens`` text tokens
of the corpus, in one context window. The first ``n_pre`` positions run densely (the prompt): the
prefix token and the ``prefill`` text tokens, and never fewer than one, since position 0 is the
attention sink whatever token sits there (``traces.prefix.dense_positions``); the rest are masked
and step the caches ("decode"). Scored are the next-token predictions of every token after the
prompt, each from its full prefix: ``tokens - prefill`` of them with a prefix token and
``tokens - max(prefill, 1)`` without, so with ``prefill = 0`` the dense perplexity is exactly the
model's loss-based perplexity on the sequence (``model(input_ids=seq, labels=seq)``). Metrics:

* ``perplexity``: exp(mean NLL); ``kl_to_dense``: mean KL(dense || config) of the next-token
  distributions; ``top1_agreement``: share of positions where the arg-max matches;
* 95% intervals of the three (``perplexity_low`` / ``perplexity_high``, ...) and the paired
  difference to dense on the same positions (``perplexity_diff`` with its interval), from a block
  bootstrap over positions (``intervals``);
* ``closed_loop_hit_rate`` (by bytes, across groups) and ``closed_loop_flash_bytes_per_token``, from an
  ``AccessLog`` built like replay's, over the decode tokens after ``warmup``;
* ``open_loop_hit_rate`` / ``open_loop_flash_bytes_per_token``: replay of the dense trace of the
  same tokens with the same configuration and warm-up.

Calibrated policies (``threshold``, ``static``; the ``pinned`` cache; a non-uniform allocation)
calibrate on the first ``calib_tokens`` tokens of the dense trace, as replay does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from common.errors import DipsimError
from traces import prefix as prefix_mod

from ..replay import calibration, group_runs, make_groups, needs_gate_activations, prepare, replay
from . import session, store
from .intervals import BLOCK, text_intervals
from .configs import check_run_args, normalize_config, replay_config
from .layerwise import ConfigRun, layerwise
from .model import dense_pass, text_config

from ..config import LOOPS
#: metrics every result row holds (besides the configuration)
METRICS = ("perplexity", "kl_to_dense", "top1_agreement", "closed_loop_hit_rate", "closed_loop_flash_bytes_per_token",
           "open_loop_hit_rate", "open_loop_flash_bytes_per_token", "scored_tokens")


def evaluate(model: Any, configs: list[dict[str, Any]] | dict[str, Any], *, text: str | os.PathLike | None = None,
             dataset: str | os.PathLike | None = None, text_column: str = "text", tokens: int = 1024,
             prefill: int = 0, warmup: int = 16, calib_tokens: int = 64, loop: str = "layer", reuse: bool = True,
             progress: bool = False, details: bool = False, batch_invariant: bool = True,
             prefix_token: str | int = prefix_mod.DEFAULT) -> list[dict[str, Any]]:
    """Closed-loop accuracy and cache figures of each configuration.

    ``model``: a name or path for :func:`traces.models.load_model`, or a ``LoadedModel``.
    ``configs``: one configuration or a list (see :func:`normalize_config`). ``text`` /
    ``dataset``: the corpus (default: the offline default corpus). ``tokens``: text tokens after the
    prefix token; ``prefix_token``: ``auto`` (the model's own convention), ``bos``, ``eos``, ``none``
    or a token id (``traces.prefix``), resolved before the model loads and part of the store's key;
    ``prefill``: leading text tokens run densely and left out of every metric; ``warmup``: decode
    tokens left out of the hit rates (as in replay); ``calib_tokens``: dense-trace prefix for
    calibrated policies. ``loop``: ``layer`` (default: one parallel forward per configuration,
    ``accuracy.layerwise``) or ``token`` (the token-by-token reference, ``accuracy.tokenloop``;
    ``batch_invariant`` applies to it). ``reuse``: read and write the on-disk result store.
    ``details``: add ``details`` to each result (no store read then): ``logits [scored, vocab]``,
    per-position ``nll``/``kl``/``top1``, the closed-loop ``access_log`` and ``masks`` (``[T, L, N]``
    per group), the ``dense_trace`` and the ``closed_trace`` (the activations this configuration's
    policy scored, so that replaying it must give the closed-loop masks and hits exactly), and the
    ``tokens`` of the sequence (prefix token included) with ``dense_positions``, the prompt's length.

    Returns one dict per configuration, in order: the metrics of :data:`METRICS`, the normalized
    ``config``, ``label`` and run facts. Bad input raises a one-line DipsimError before any model work.
    """
    from traces.corpus import load_corpus
    from traces.models import LoadedModel, resolve

    if isinstance(configs, dict):
        configs = [configs]
    if not isinstance(configs, (list, tuple)) or not configs:
        raise DipsimError("configs must be a non-empty list of configurations")
    if loop not in LOOPS:
        raise DipsimError(f"unknown loop {loop!r}; allowed: {', '.join(LOOPS)}")
    cfgs = [normalize_config(c, f"config {i + 1}" if len(configs) > 1 else "config") for i, c in enumerate(configs)]
    for c in cfgs:
        refusal = replay_config(c).policy().loop_refusal()
        if refusal:
            raise DipsimError(f"config {c['label']!r}: {refusal}")
    if loop == "token":   # simulator.methods' files and look-ahead policies run in the layer-wise loop only
        for c in cfgs:
            p = replay_config(c).policy()
            if c.get("variant") or c.get("adapter") or "prev_x" in (p.score_source("x"), p.score_source("h")):
                raise DipsimError(f"config {c['label']!r}: variants, adapters and look-ahead predictors run in the "
                                  f"layer-wise loop only (loop='layer')")
    prefix_mod.check(prefix_token, "prefix_token")
    source = model.source if isinstance(model, LoadedModel) else resolve(model)
    prefix = prefix_mod.resolve(prefix_token, model if isinstance(model, LoadedModel) else source)
    tokens, prefill, warmup, calib_tokens = check_run_args(tokens, prefill, warmup, calib_tokens, prefix)
    corpus = load_corpus(text, dataset, text_column)
    run_key = {"tokens": tokens, "prefill": prefill, "warmup": warmup, "calib_tokens": calib_tokens, "loop": loop,
               "prefix_token": prefix, "intervals": f"block bootstrap {BLOCK}"}
    if loop == "token":
        run_key["batch_invariant"] = bool(batch_invariant)
    if getattr(model, "variant_tag", None):   # weights swapped in from outside (methods.weights.Swap)
        run_key["weights"] = model.variant_tag
    keys, results = store.lookup(source, corpus.digest, run_key, cfgs, reuse and not details)
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results  # type: ignore[return-value]

    with _loaded(model, source, details) as (lm, keep):
        computed = _evaluate_loaded(lm, [cfgs[i] for i in todo], corpus, tokens, prefill, prefix, warmup,
                                    calib_tokens, loop, progress, details, batch_invariant, keep)
    for i, res in zip(todo, computed):
        if reuse:
            store.write_cached(keys[i], {k: v for k, v in res.items() if k not in ("config", "label", "details")})
        results[i] = res
    return results  # type: ignore[return-value]


@contextmanager
def _loaded(model, source, details: bool) -> Iterator[tuple[Any, str | None]]:
    """The model to run and, when its dense pass may be kept for the next run, the key of the model
    (``session``: a model named by a string is kept in this process; one handed in is used as is, and
    with ``details`` the caller receives the dense trace, so it is computed afresh)."""
    key = store.model_key(source)
    with session.model(model, key) as lm:
        yield lm, None if details or lm is model else key


def _dense(lm, seq: list[int], n_pre: int, meta: dict[str, Any], gate: bool, keep: str | None):
    """The dense pass (``model.dense_pass``: the dense trace and final hidden states; and a place for the
    dense row's scores, ``metrics.score_hidden``), kept in this process for the next run of the same
    model, text, tokens and prompt when ``keep`` (the model's key) is given (``session.dense_pass``)."""
    def compute(with_g: bool):     # the trace, the hidden states and (kept) the dense row's scores
        trace, hidden = dense_pass(lm, seq, n_pre, {**meta, "has_g": with_g}, keep_hidden=True, with_g=with_g)
        return trace, hidden, ({} if keep else None)

    if keep is None:
        return compute(gate)
    described = {k: v for k, v in meta.items() if k != "has_g"}    # the model's facts, the corpus, the prefix
    key = json.dumps([keep, described, seq, n_pre], sort_keys=True, default=str)
    return session.dense_pass(key, gate, compute)


def _sequence(lm, corpus, tokens: int, prefill: int, prefix: int | None) -> tuple[list[int], int]:
    """The token sequence (prefix token, then the text's first ``tokens`` tokens) and how many of its
    leading positions run densely."""
    from traces.capture import tokenize_prefix

    seq = prefix_mod.sequence(prefix, tokenize_prefix(lm.tokenizer, corpus, tokens, least=2))
    max_pos = getattr(text_config(lm.model), "max_position_embeddings", None)
    if max_pos and len(seq) > int(max_pos):
        raise DipsimError(f"{len(seq)} positions exceed {lm.info.model}'s context of {max_pos}; ask for fewer --tokens")
    return seq, prefix_mod.dense_positions(prefix, prefill)


def _setups(cfgs, meta, trace, calib_tokens):
    """Per configuration: (replay configuration, setup, calibration) decided on the dense trace."""
    out = []
    for c in cfgs:
        rc = dataclasses.replace(replay_config(c), calib_tokens=calib_tokens)
        calib = calibration(trace, meta, rc)
        out.append((rc, prepare(meta, rc, calib), calib))
    return out


def _evaluate_loaded(lm, cfgs, corpus, tokens, prefill, prefix, warmup, calib_tokens, loop, progress, details,
                     batch_invariant, keep: str | None = None) -> list[dict[str, Any]]:
    from traces.format import Trace

    meta = dict(lm.info.as_meta())
    seq, n_pre = _sequence(lm, corpus, tokens, prefill, prefix)
    gate = details or any(needs_gate_activations(replay_config(c)) for c in cfgs)   # only then record g
    meta.update(corpus=corpus.name, corpus_digest=corpus.digest, context=len(seq), prefix_token=prefix,
                first_text_token=n_pre - (prefix is not None), has_h=True, has_g=gate)
    for c in cfgs:   # per-layer keep lists and the like, checked against the real dimensions first
        try:
            make_groups(meta, replay_config(c))
        except DipsimError as e:
            raise DipsimError(f"config {c['label']!r}: {e}") from None

    t_start = time.perf_counter()
    trace, dense_hidden, dense_scores = _dense(lm, seq, n_pre, meta, gate, keep)
    t_trace, T = time.perf_counter() - t_start, trace.n_tokens
    setups = _setups(cfgs, meta, trace, calib_tokens)
    if loop == "layer":
        runs = [ConfigRun(c, setup, group_runs(setup, lm.info.n_layers, T, calib)) for c, (_, setup, calib)
                in zip(cfgs, setups)]
        res = layerwise(lm, seq, n_pre, runs, dense_hidden, progress=progress, details=details,
                        dense_scores=dense_scores)
        rows = 1 + sum(r.prunes for r in runs)
    else:
        from .tokenloop import TokenConfigRun, closed_loop

        runs, row = [], 0
        for c, (_, setup, calib) in zip(cfgs, setups):
            r = 0 if not any(g.pruned for g in setup.groups) else (row := row + 1)
            runs.append(TokenConfigRun(c, setup, meta, T, r, calib))
        rows = row + 1
        res = closed_loop(lm, seq, runs, rows, n_pre, progress=progress, details=details,
                          batch_invariant=batch_invariant)
    out = []
    for c, (rc, _, _), r in zip(cfgs, setups, runs):
        closed_log = r.access_log(meta, warmup, res.seconds)
        closed = closed_log.totals()
        t0 = time.perf_counter()
        opened = replay(trace, dataclasses.replace(rc, warmup=warmup)).totals()
        nll, kl, top1 = res.nll[r.row], res.kl[r.row], res.top1[r.row]
        result: dict[str, Any] = {
            "label": c["label"],
            "perplexity": float(np.exp(nll.mean())),
            "kl_to_dense": float(kl.mean()),
            "top1_agreement": float(top1.mean()),
            "closed_loop_hit_rate": float(closed["hit_rate"]),
            "closed_loop_flash_bytes_per_token": float(closed["flash_bytes_per_token"]),
            "closed_loop_dram_bytes_per_token": float(closed["dram_bytes_per_token"]),
            "mlp_bytes_per_token": float(closed["mlp_bytes_per_token"]),
            "open_loop_hit_rate": float(opened["hit_rate"]),
            "open_loop_flash_bytes_per_token": float(opened["flash_bytes_per_token"]),
            "keep_actual": {g: float(v["keep"]) for g, v in closed["groups"].items()},
            "dense_perplexity": float(np.exp(res.nll[0].mean())),
            "mean_nll": float(nll.mean()),
            "scored_tokens": int(nll.size),
            "measured_tokens": int(closed["measured_tokens"]),
            "prefill": prefill, "warmup": warmup, "loop": loop, "prefix_token": prefix,
            "model": lm.info.model, "corpus": corpus.name, "corpus_digest": corpus.digest,
            "batch_rows": rows, "row": r.row,
            "loop_seconds": res.seconds, "select_seconds": res.extra["select_seconds"], "trace_seconds": t_trace,
            "open_loop_seconds": time.perf_counter() - t0,
            "from_cache": False,
            "config": c,
        }
        figures = text_intervals(nll, res.nll[0], kl, top1)
        if r.row == 0:    # the dense model itself, or a configuration that prunes nothing
            figures = {k: v for k, v in figures.items() if "_diff" not in k}
        result.update(figures)
        if details:
            xs, hs, gs = res.extra["x"], res.extra["h"], res.extra["g"]
            closed_trace = trace if (loop == "layer" and r.row == 0) else Trace.from_arrays(xs[r.row], hs[r.row], meta,
                                                                                            gs[r.row])
            masks = r.masks if loop == "layer" else r.mask_log
            result["details"] = {"logits": res.logits[:, r.row], "nll": nll, "kl": kl, "top1": top1,
                                 "access_log": closed_log, "masks": masks, "closed_trace": closed_trace,
                                 "dense_trace": trace, "tokens": seq, "dense_positions": n_pre}
        out.append(result)
    return out
