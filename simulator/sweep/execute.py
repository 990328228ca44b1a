"""Running one sweep point: its trace (captured once and cached), replay (shared by points that differ
only in device, engine or layout), the engine on its device, the point against its dense baseline
(``sweep.dense``: run once per process and baseline), and its accuracy columns (measured in the loop
before the points, read here from the accuracy store).

Every row holds the point's metrics as ``m.<name>`` in the vocabulary of ``simulator.metrics``:
replay's totals, ``m.<group>.<metric>`` per matrix group, the engine's summary with the dense
baseline's figures (``speedup_vs_dense``, ...), and with ``accuracy: true`` the closed-loop figures.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from common.errors import DipsimError
from common.io import cache_root
from traces import prefix

from .. import plugins
from ..config import MmluTask, PointConfig, TraceSpec
from .dense import baseline_key, dense_figures, dense_point, is_own_baseline, versus_dense
from .experiment import Point

_TRACES: dict[str, Any] = {}
_LOGS: dict[str, Any] = {}
#: this process's dense baselines' figures, by ``baseline_key``
_DENSE: dict[str, dict[str, Any]] = {}
#: the accuracy figures a row carries, under the names of the metric table
ACCURACY_METRICS = ("perplexity", "perplexity_low", "perplexity_high", "perplexity_diff", "perplexity_diff_low",
                    "perplexity_diff_high", "kl_to_dense", "kl_to_dense_low", "kl_to_dense_high", "top1_agreement",
                    "top1_agreement_low", "top1_agreement_high", "closed_loop_hit_rate",
                    "closed_loop_flash_bytes_per_token", "dense_perplexity", "prefix_token")
#: the same for the MMLU task (``accuracy: {task: mmlu, ...}``)
MMLU_ROW_METRICS = ("mmlu_accuracy", "mmlu_accuracy_low", "mmlu_accuracy_high", "mmlu_questions", "mmlu_dense_accuracy",
                    "mmlu_accuracy_diff", "mmlu_accuracy_diff_low", "mmlu_accuracy_diff_high", "mmlu_mcnemar_p",
                    "mmlu_hit_rate", "prefix_token")


@functools.lru_cache(maxsize=1)
def _shipped_fit_digest() -> str:
    """SHA-1 of the shipped trace-model fit (read once: it ships with the package)."""
    from traces.synth.model import DEFAULT_FIT

    return hashlib.sha1(DEFAULT_FIT.read_bytes()).hexdigest()


def captured_trace_path(spec: TraceSpec) -> Path:
    """Where the capture of a {model, tokens[, text, context, prefix_token]} trace is cached, keyed on
    the resolved prefix token (a synth:NAME trace: where its generation is, keyed also on the
    shipped fit's bytes; it has no prefix)."""
    d = spec.to_mapping(skip_defaults=False)
    if d.get("seed") == 0:
        d.pop("seed")                 # captures cached before the field existed keep their names
    if spec.synthetic is not None:
        d["fit"] = _shipped_fit_digest()
        d.pop("prefix_token")
    else:   # a capture from before the prefix-token convention has no such key: it is not found
        d["prefix_token"] = prefix.resolve(spec.prefix_token, spec.model, "trace: prefix_token")
    tag = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{spec.model}-{spec.tokens}{'-' + Path(spec.text).stem if spec.text else ''}-{tag}"
    return cache_root() / "traces" / f"{name.replace('/', '_').replace(':', '_')}.safetensors"


def trace_path(trace: Any) -> Path:
    return captured_trace_path(trace) if isinstance(trace, TraceSpec) else Path(str(trace))


def trace_for(trace: Any, progress: bool = False, recapture: bool = False):
    """The point's trace, memory-mapped and cached per process; a {model, tokens} trace is captured
    first when its cached capture does not exist yet (or, with ``recapture``, again: a capture from
    before the trace held gate activations)."""
    import traces

    path = trace_path(trace)
    if recapture:
        _TRACES.pop(str(path), None)
    if isinstance(trace, TraceSpec) and not path.exists() and trace.synthetic is not None:
        from traces import synth

        synth.like(trace.synthetic, trace.tokens, path, seed=trace.seed, progress=progress)
    elif isinstance(trace, TraceSpec) and (recapture or not path.exists()):
        traces.capture(trace.model, path, tokens=trace.tokens, text=trace.text, context=trace.context,
                       prefix_token=prefix.resolve(trace.prefix_token, trace.model, "trace: prefix_token"),
                       progress=progress)
    key = str(path)
    if key not in _TRACES:
        if len(_TRACES) > 4:
            _TRACES.clear()
        _TRACES[key] = traces.load(path)
    return _TRACES[key]


def replay_key(cfg: PointConfig) -> str:
    """Points with the same replay key share one replay (they differ only in device, engine, ...); a
    plugin's classes add their source hash (``plugins.source_key``)."""
    return json.dumps([str(trace_path(cfg.trace)), cfg.replay.to_mapping(), plugins.source_key(cfg.replay)],
                      sort_keys=True, default=str)


def _replayed(cfg: PointConfig, threads: int | None):
    from ..replay import replay

    key = replay_key(cfg)
    if key not in _LOGS:
        if len(_LOGS) >= 2:
            _LOGS.pop(next(iter(_LOGS)))
        _LOGS[key] = replay(trace_for(cfg.trace), cfg.replay, threads=threads)
    return _LOGS[key]


def run_points(group: list[PointConfig], threads: int | None = 1,
               dense: list[dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:
    """Evaluate points that share a replay (see :func:`replay_key`), in order; ``dense``: each point's
    dense baseline figures when the caller has them (else each is run once in this process)."""
    return [run_point(p, threads, dense=d) for p, d in zip(group, dense or [None] * len(group))]


def run_plugin_points(plugin_specs: list[tuple[str, str]], group: list[PointConfig],
                      dense: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """``run_points`` in a worker process (the pool's or Dask's), after loading the parent's plugins
    (``plugins.loaded``; each once per process; a file changed since the parent read it is refused)."""
    plugins.load(plugin_specs, where="worker")
    return run_points(group, 1, dense)


def dense_key(cfg: PointConfig) -> str:
    """The key of the point's dense baseline (``sweep.dense.baseline_key`` on its trace file)."""
    return baseline_key(cfg, trace_path(cfg.trace))


def dense_baseline(cfg: PointConfig, threads: int | None = 1) -> dict[str, Any]:
    """The figures of the point's dense baseline (``sweep.dense``), run once per process and key."""
    key = dense_key(cfg)
    if key not in _DENSE:
        _DENSE[key] = dense_figures(run_point(dense_point(cfg), threads), prefix="m.")
    return _DENSE[key]


def point_meta(cfg: PointConfig) -> dict[str, Any]:
    """The trace's metadata as the point's model has it: with a LoRA adapter, its fp16 bytes
    (``adapter_bytes``) join the static weights the engine and the device budget count."""
    meta = dict(trace_for(cfg.trace).meta)
    if cfg.adapter:
        from common.store import read_meta

        meta["adapter_bytes"] = float(read_meta(cfg.adapter, "adapter")["fp16_bytes"])
    return meta


def resolved(cfg: PointConfig) -> PointConfig:
    """The point with what its files and device decide: a pruned variant's stored bytes per weight
    as the weight format (unless the point sets one), and for a point naming a device but neither
    dram_fraction nor dram_bytes, the cache budget the device leaves (``engine.budget``)."""
    from ..engine.budget import budget_source, with_device_budget

    if cfg.variant and cfg.replay.weight_format == "source":
        from ..methods.variants import bytes_per_weight

        cfg = dataclasses.replace(cfg, replay=dataclasses.replace(cfg.replay,
                                                                  weight_format=bytes_per_weight(cfg.variant)))
    if budget_source(cfg.replay, cfg.device) != "device":
        return cfg
    return dataclasses.replace(cfg, replay=with_device_budget(cfg.replay, cfg.device, point_meta(cfg)))


def run_point(cfg: PointConfig, threads: int | None = 1, *, dense: dict[str, Any] | None = None) -> dict[str, Any]:
    """One point's metrics: replay, then the engine and the point against its dense baseline if a
    device is given (``dense``: the baseline's figures, when the caller has them), then accuracy if
    asked."""
    from ..engine.budget import budget_source

    t0 = time.perf_counter()
    source = budget_source(cfg.replay, cfg.device)
    point, cfg = cfg, resolved(cfg)     # the baseline is of the point as given (its budget rule, no variant)
    log = _replayed(cfg, threads)
    tot = log.totals()
    row: dict[str, Any] = {f"m.{k}": v for k, v in tot.items() if not isinstance(v, dict)}
    row["m.cache_budget_from"] = source
    row["m.cache_budget_bytes"] = int(round(float(log.config["dram_bytes"])))
    for g, v in tot["groups"].items():
        for k, x in v.items():
            row[f"m.{g}.{k}"] = x
    meta = point_meta(cfg) if cfg.adapter else None   # read once: it opens the adapter's header
    if meta is not None:
        row["m.adapter_bytes"] = meta["adapter_bytes"]
    if cfg.device is not None:
        from ..engine import simulate

        if meta is not None:     # the engine reads the model's static parts from the log's metadata
            log = dataclasses.replace(log, trace_meta=meta)
        res = simulate(log, cfg.device, layout=cfg.layout, engine=cfg.engine)
        for k, v in res.summary().items():
            if not isinstance(v, (dict, list)):
                row[f"m.{k}"] = v
        if is_own_baseline(point):    # the dense model is its own baseline (speedup_vs_dense exactly 1)
            dense = dense_figures(row, prefix="m.")
            _DENSE.setdefault(dense_key(point), dense)
        row.update({f"m.{k}": v for k, v in versus_dense(row, dense or dense_baseline(point, threads), "m.").items()})
    synth = trace_for(cfg.trace).meta.get("synth")
    if isinstance(synth, dict):   # an extrapolated trace: its validation error travels with the row
        from ..synth_validation import error_columns

        mlp = sum(g.n_columns * g.bytes_per_column for g in log.groups.values()) * log.n_layers
        engine = {k[2:]: v for k, v in row.items() if k in ("m.tokens_per_s", "m.flash_ms_per_token")}
        cols = error_columns(synth.get("validation"), log.config, float(log.config["dram_bytes"]) / mlp, tot,
                             engine or None)
        row.update({f"m.{k}": v for k, v in cols.items()})
    if cfg.accuracy:
        from .. import accuracy

        model, kw = accuracy_run(cfg)
        mmlu = isinstance(cfg.accuracy, MmluTask)
        acc = (accuracy.evaluate_mmlu if mmlu else accuracy.evaluate)(model, [accuracy_config(cfg)], **kw)[0]
        for k in MMLU_ROW_METRICS if mmlu else ACCURACY_METRICS:
            row[f"m.{k}"] = acc.get(k)
    row["m.point_seconds"] = time.perf_counter() - t0
    return row


def accuracy_config(cfg: PointConfig) -> dict[str, Any]:
    """The closed-loop configuration of a point (what ``accuracy.evaluate`` takes)."""
    out = cfg.replay.flat()
    for k in ("warmup", "calib_tokens", "tokens"):
        out.pop(k)
    out.update({k: v for k, v in (("variant", cfg.variant), ("adapter", cfg.adapter)) if v})
    return out


def trace_prefix(meta: dict[str, Any]) -> Any:
    """The prefix token a trace was captured with, as a prefix_token value: its resolved id (None:
    none), or for a trace from before the convention was recorded, the BOS it then always ran."""
    if "first_text_token" in meta:
        return "none" if meta.get("prefix_token") is None else int(meta["prefix_token"])
    return "bos" if meta.get("bos") else "none"


def accuracy_run(cfg: PointConfig) -> tuple[str, dict[str, Any]]:
    """Model and run options of a point's accuracy columns: the trace's model, text and prefix token,
    the point's warm-up and calibration prefix, ``accuracy_tokens`` tokens (default: the trace's);
    for the MMLU task the trace's model and prefix token, the calibration prefix and the task's options."""
    meta = trace_for(cfg.trace).meta
    if isinstance(cfg.accuracy, MmluTask):
        model = cfg.trace.model if isinstance(cfg.trace, TraceSpec) else str(meta["model"])
        return model, {**cfg.accuracy.kwargs(), "calib_tokens": cfg.replay.calib_tokens,
                       "prefix_token": trace_prefix(meta)}
    if isinstance(cfg.trace, TraceSpec):
        model, text = cfg.trace.model, cfg.trace.text
    elif meta.get("corpus") == "pydoc-topics":
        model, text = str(meta["model"]), None
    else:
        raise DipsimError(f"accuracy columns need the trace's text: give the trace as {{model, tokens, text}} "
                          f"(this trace's corpus is {meta.get('corpus')!r})")
    kw = {"text": text, "tokens": int(cfg.accuracy_tokens or meta["n_tokens"]), "warmup": cfg.replay.warmup,
          "calib_tokens": cfg.replay.calib_tokens, "prefix_token": trace_prefix(meta)}
    return model, kw


def precompute_accuracy(points: list[Point], say: Callable[[str], None], progress: bool) -> None:
    """Run every point's closed-loop configuration before the sweep, grouped per (model, text,
    tokens) so that the model loads and the dense pass runs once per group; the results land in the
    accuracy store that the points then read."""
    from .. import accuracy

    batches: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]] = {}
    for p in points:
        if not p.config.accuracy:
            continue
        cfg = resolved(p.config)
        model, kw = accuracy_run(cfg)
        key = json.dumps([model, kw], sort_keys=True, default=str)
        batches.setdefault(key, (model, kw, []))[2].append(accuracy_config(cfg))
    for model, kw, cfgs in batches.values():
        unique = list({json.dumps(c, sort_keys=True, default=str): c for c in cfgs}.values())
        if "questions_per_topic" in kw:
            accuracy.session.release()      # the text runs' model and dense pass go before the MMLU task's model
            say(f"MMLU in the loop: {len(unique)} configurations of {model}")
            accuracy.evaluate_mmlu(model, unique, progress=progress, **kw)
            continue
        say(f"accuracy in the loop: {len(unique)} configurations of {model} over {kw['tokens']} tokens")
        accuracy.evaluate(model, unique, progress=progress, **kw)
    accuracy.session.release()      # the points read the store: the model need not stay in memory
