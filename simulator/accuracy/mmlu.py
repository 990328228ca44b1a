"""``evaluate_mmlu``: MMLU accuracy of configurations with the policy in the loop (``mmlu_loop``).

    from simulator.accuracy import evaluate_mmlu
    rows = evaluate_mmlu("qwen2.5-0.5b", [{"masking": "dense"}, {"masking": "dip", "keep": 0.5}],
                         questions_per_topic=10)
    rows[1]["mmlu_accuracy"], rows[1]["mmlu_accuracy_low"], rows[1]["mmlu_accuracy_diff"]

Every row reports its accuracy with the Wilson interval and, for a configuration that prunes,
its paired difference to the dense model on the same questions (``intervals.accuracy_figures``),
beside the closed-loop hit rate of the whole question stream. Results go to the accuracy store
keyed by the model, the questions file's digest, every run option and the configuration.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from common.errors import DipsimError
from traces import prefix as prefix_mod

from . import session, store
from .configs import normalize_config
from .intervals import accuracy_figures
from .mmlu_loop import (BATCH_TOKENS, answers, build_prompts, calibration_trace, check_letters, forward_batches,
                        mmlu_meta, run_config, step_unpruned, with_calib)

#: what an MMLU row reports besides its configuration (``simulator.metrics``)
MMLU_METRICS = ("mmlu_accuracy", "mmlu_accuracy_low", "mmlu_accuracy_high", "mmlu_questions", "mmlu_accuracy_diff",
                "mmlu_accuracy_diff_low", "mmlu_accuracy_diff_high", "mmlu_mcnemar_p", "mmlu_hit_rate")
#: the store's key, in place of a configuration, of a run's dense answers (``_known_dense``)
DENSE_PASS = {"dense_pass": True}


def evaluate_mmlu(model: Any, configs: list[dict[str, Any]] | dict[str, Any], *,
                  questions: str | os.PathLike | None = None, questions_per_topic: int | None = 10, shots: int = 0,
                  question_seed: int = 0, reset_cache: bool = False, dtype: str = "float32",
                  calib_tokens: int = 64, prefix_token: str | int = prefix_mod.DEFAULT, reuse: bool = True,
                  progress: bool = False, details: bool = False) -> list[dict[str, Any]]:
    """MMLU accuracy of each configuration (see the module doc and ``mmlu_loop``).

    ``model``: a name or path, or a ``LoadedModel`` (then ``dtype`` is whatever it was loaded in).
    ``questions``: a questions file (default: the installed MMLU set); ``questions_per_topic``: the
    stratified draw (None: every question); ``shots``: worked examples per prompt; ``question_seed``:
    seed of the draw and of the examples; ``reset_cache``: each question from a fresh cache;
    ``calib_tokens``: masked positions of the dense pass that calibrated policies learn from.
    ``details``: add ``details`` (``ids`` in run order, ``logprobs [questions, 4]``, ``tokens``).
    """
    from traces import questions as q
    from traces.models import LoadedModel, resolve

    cfgs = _configs(configs)
    prefix_mod.check(prefix_token, "prefix_token")
    source = model.source if isinstance(model, LoadedModel) else resolve(model)
    prefix = prefix_mod.resolve(prefix_token, model if isinstance(model, LoadedModel) else source)
    qs = q.load_questions(questions)
    ids = q.stratified(qs, questions_per_topic, question_seed)
    if shots:
        q.shots(qs, ids[0], shots, question_seed)   # too few questions in a topic: said before the model loads
    if isinstance(model, LoadedModel):
        dtype = model.info.compute_dtype
    run_key = {"task": "mmlu", "questions_per_topic": questions_per_topic, "shots": shots,
               "question_seed": question_seed, "reset_cache": bool(reset_cache), "calib_tokens": calib_tokens,
               "prefix_token": prefix, "dtype": dtype, "batch_tokens": BATCH_TOKENS}
    if getattr(model, "variant_tag", None):
        run_key["weights"] = model.variant_tag
    keys, results = store.lookup(source, qs.digest, run_key, cfgs, reuse and not details)
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        model_key = store.model_key(source)
        dense_key = store.result_key(model_key, qs.digest, run_key, DENSE_PASS)
        dense_rows = [r for r in results if r and _plain_dense(r["config"])]
        if reuse and not details:
            dense_rows.append(store.read_cached(dense_key))
        with session.model(model, model_key, dtype) as lm:   # a named model is kept (session)
            done, dense_pass = _evaluate_loaded(lm, [cfgs[i] for i in todo], qs, ids, shots, question_seed,
                                                reset_cache, calib_tokens, prefix, progress, details,
                                                _known_dense(dense_rows, ids))
        if reuse and dense_pass is not None:
            store.write_cached(dense_key, dense_pass)
        for i, res in zip(todo, done):
            res.update(questions=qs.name, questions_digest=qs.digest, dtype=dtype, **{
                k: run_key[k] for k in ("questions_per_topic", "shots", "question_seed", "reset_cache")})
            if reuse:
                store.write_cached(keys[i], {k: v for k, v in res.items() if k not in ("config", "label", "details")})
            results[i] = res
    return results  # type: ignore[return-value]


def _plain_dense(cfg: dict[str, Any]) -> bool:
    return cfg.get("masking") == "dense" and not (cfg.get("variant") or cfg.get("adapter"))


def _known_dense(rows: list[dict[str, Any] | None], ids) -> dict[str, Any] | None:
    """The dense model's answer to each question (``answers``: id -> letter index) and the seconds its
    pass took (``seconds``) from a stored dense row or dense pass (:data:`DENSE_PASS`) of the same run:
    configurations that prune then pay their own forwards only, not the dense pass again (its answers
    are all their paired differences use) -- a search's trials, one configuration each, or rows added
    to a finished evaluation."""
    from traces.questions import LETTERS

    for r in rows:
        if r and sorted(r.get("mmlu_question_ids") or []) == sorted(int(i) for i in ids) \
                and len(r.get("mmlu_answers") or "") == len(ids):
            return {"answers": {i: LETTERS.index(a) for i, a in zip(r["mmlu_question_ids"], r["mmlu_answers"])},
                    "seconds": r.get("trace_seconds")}
    return None


def _configs(configs) -> list[dict[str, Any]]:
    if isinstance(configs, dict):
        configs = [configs]
    if not isinstance(configs, (list, tuple)) or not configs:
        raise DipsimError("configs must be a non-empty list of configurations")
    return [normalize_config(c, f"config {i + 1}" if len(configs) > 1 else "config") for i, c in enumerate(configs)]


def _evaluate_loaded(lm, cfgs, qs, ids, shots, seed, reset, calib_tokens, prefix, progress, details,
                     known_dense: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of ``cfgs`` and, if the dense forward ran, its answers for the store (``DENSE_PASS``)."""
    from common.progress import progress_bar

    from ..replay import group_runs, make_groups, needs_calibration, new_cache
    from .configs import replay_config
    from .layerwise import ConfigRun
    from .model import text_config

    max_pos = getattr(text_config(lm.model), "max_position_embeddings", None)
    prompts = build_prompts(lm.tokenizer, qs, ids, shots, seed, prefix, int(max_pos) if max_pos else None)
    check_letters(lm.tokenizer, qs, prompts)
    meta = mmlu_meta(lm, qs, prompts, prefix)
    for c in cfgs:
        try:
            make_groups(meta, replay_config(c))
        except DipsimError as e:
            raise DipsimError(f"config {c['label']!r}: {e}") from None
    L, T = lm.info.n_layers, prompts.masked
    runs = []
    t0 = time.perf_counter()
    need = any(needs_calibration(replay_config(c)) for c in cfgs)
    trace = calibration_trace(lm, prompts, calib_tokens, meta) if need else None
    for c, (setup, calib) in zip(cfgs, with_calib(cfgs, meta, trace, calib_tokens)):
        runs.append((ConfigRun(c, setup, group_runs(setup, L, T, calib, missed=False)), setup, calib))
    pruning = [r for r, _, _ in runs if r.prunes]
    skip_dense = known_dense is not None and len(pruning) == len(runs)
    n_fwd = len(pruning) + (not skip_dense)
    bar = progress_bar(len(prompts.seqs) * n_fwd, progress,
                       f"mmlu: {len(prompts.seqs)} questions x {n_fwd} forwards", unit="q")
    try:
        if skip_dense:      # every configuration prunes: the stored dense answers are all they need
            dense_lp = np.full((len(prompts.seqs), 4), -np.inf)
            dense_lp[np.arange(len(prompts.seqs)), [known_dense["answers"][i] for i in prompts.ids]] = 0.0
            t_dense = known_dense["seconds"]     # the stored pass these rows' differences rest on
        else:
            dense_lp = forward_batches(lm, prompts, on_batch=bar.update)
            t_dense = time.perf_counter() - t0
        dense_pass = None if skip_dense else {**_set_order(prompts, np.argmax(dense_lp, axis=1)),
                                              "trace_seconds": t_dense}
        out = []
        for run, setup, calib in runs:
            def fresh(g, setup=setup, calib=calib):
                return new_cache(setup, g.group, L, calib)

            t1 = time.perf_counter()
            if run.prunes:
                lp, select_s = run_config(lm, prompts, run, reset, fresh, on_batch=bar.update)
            else:
                lp, select_s = dense_lp, 0.0
                step_unpruned(run, prompts, L, reset, fresh)
            out.append(_row(run, lp, dense_lp, qs, prompts, meta, time.perf_counter() - t1, select_s, t_dense,
                            prefix, lm, details))
    finally:
        bar.close()
    return out, dense_pass


def _set_order(prompts, letters: np.ndarray) -> dict[str, Any]:
    """Answers (letter indices in run order) as a row stores them: in the set's order, not run order."""
    from traces.questions import LETTERS

    order = np.argsort(prompts.ids)
    return {"mmlu_answers": "".join(LETTERS[j] for j in letters[order]),
            "mmlu_question_ids": [int(i) for i in np.asarray(prompts.ids)[order]]}


def _row(run, lp, dense_lp, qs, prompts, meta, seconds, select_s, t_dense, prefix, lm, details) -> dict[str, Any]:
    truth = np.array([qs.questions[i].answer for i in prompts.ids])
    mine, dense = np.argmax(lp, axis=1), np.argmax(dense_lp, axis=1)
    figures = accuracy_figures(mine == truth, (dense == truth) if run.prunes else None)
    totals = run.access_log(meta, 0, seconds).totals()
    res: dict[str, Any] = {
        "label": run.cfg["label"], **{k: figures.get(k) for k in
                                      ("mmlu_accuracy", "mmlu_accuracy_low", "mmlu_accuracy_high", "mmlu_questions",
                                       "mmlu_accuracy_diff", "mmlu_accuracy_diff_low", "mmlu_accuracy_diff_high",
                                       "mmlu_mcnemar_p")},
        "mmlu_hit_rate": float(totals["hit_rate"]),
        "mmlu_dense_accuracy": float(np.mean(dense == truth)),
        **_set_order(prompts, mine),
        "scored_tokens": int(prompts.masked),
        "prefix_token": prefix, "model": lm.info.model,
        "loop_seconds": seconds, "select_seconds": select_s, "trace_seconds": t_dense,
        "from_cache": False, "config": run.cfg,
    }
    if details:
        res["details"] = {"ids": list(prompts.ids), "logprobs": lp, "answers": answers(lp), "tokens": prompts.seqs}
    return res
