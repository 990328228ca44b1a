"""YAML sweep experiments: points from axes, run on a local process pool or Dask, resumable results.

An experiment file::

    name: gamma
    trace: {model: smollm2-135m, tokens: 1024}   # or a path; or a list under `traces:`
    base:                                        # every point starts from this
      masking: dip-ca
      keep: 0.5
      cache: lru
      device: phone-12gb-ufs40
    grid:                                        # cartesian product
      gamma: [0, 0.2, 0.5, 1.0]
      dram_fraction: [0.25, 0.5, 0.75]
    zip:                                         # lockstep (all lists the same length)
      masking: [dip, glu-prune]
      keep: [0.5, 0.5]

Keys are the parameters in ``PARAMS`` (nested ones with a dot: ``engine.overlap_io``,
``layout.reorder``, ``cache_params.hot_fraction``). ``trace`` may itself be an axis. Points that
make no sense (belady with dip-ca, say) are dropped with the reason logged. Everything is checked
before any work, with errors naming the file and key.

Results: ``OUT/results.parquet``, one row per point -- its ``key`` (readable axis values plus a
short hash of the whole resolved point), every parameter flattened, every metric -- plus
``OUT/experiment.yaml`` (the resolved experiment) and ``OUT/points/<hash>.json`` (one file per
finished point, written atomically). The parquet file is rewritten atomically after each point, so
a kill at any moment leaves a readable file, and a rerun skips finished points.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from common.errors import DipsimError
from common.io import atomic, atomic_write, cache_root
from common.jsonio import json_default

# parameter -> (type check, description). "trace" and nested keys handled separately.
PARAMS: dict[str, str] = {
    "trace": "trace file path, or {model, tokens[, text]} to capture (cached)",
    "masking": "masking policy name",
    "gamma": "dip-ca penalty in [0, 1]",
    "fixed_top_n": "dip-ca exempt top-n",
    "seed": "random masking seed",
    "keep": "kept fraction, all groups",
    "keep_up": "kept fraction, up/gate",
    "keep_gate": "separate gate keep",
    "keep_down": "kept fraction, down",
    "cache": "cache policy name",
    "cache_params": "mapping of cache policy parameters",
    "dram_fraction": "cache budget, fraction of MLP weights",
    "dram_bytes": "cache budget in bytes",
    "allocation": "uniform | benefit",
    "weight_format": "source | int4 | int8 | fp16 | bf16 | fp32 | bytes per weight",
    "warmup": "warm-up tokens",
    "calib_tokens": "calibration prefix tokens",
    "tokens": "replay only the first N tokens",
    "device": "hardware profile (device name or YAML path); no device: replay metrics only",
    "engine": "mapping of engine options",
    "layout": "mapping of layout options (reorder)",
    "accuracy": "true: also run the model in the loop (perplexity, KL, top-1)",
    "accuracy_tokens": "tokens for the accuracy run (default: the trace's)",
}
TOP_KEYS = {"name", "description", "trace", "traces", "base", "grid", "zip"}
SWEEP_VERSION = 1


@dataclass(frozen=True)
class Point:
    key: str                 # readable axis values + "#" + hash
    params: dict[str, Any]   # the resolved point (base + axes), nested mappings kept


def _fail(path: Path, msg: str) -> DipsimError:
    return DipsimError(f"{path}: {msg}")


def _check_key(path: Path, where: str, k: str) -> None:
    base = k.split(".", 1)[0]
    if base not in PARAMS:
        raise _fail(path, f"unknown key '{k}' in {where}; allowed: {', '.join(PARAMS)}")


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    if "." in key:
        head, rest = key.split(".", 1)
        sub = dict(d.get(head) or {})
        _set(sub, rest, value)
        d[head] = sub
    else:
        d[key] = value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "trace":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_short(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_short(x) for x in v) + "]"
    s = str(v)
    return Path(s).name if ("/" in s and len(s) > 24) else s


def point_hash(params: dict[str, Any]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


@dataclass
class Experiment:
    path: Path
    name: str
    raw: dict[str, Any]
    points: list[Point]
    dropped: list[tuple[str, str]]   # (readable key, reason)

    @property
    def digest(self) -> str:
        return point_hash({"raw": self.raw})


def load_experiment(path: str | os.PathLike, *, check_traces: bool = True) -> Experiment:
    """Read, check and expand an experiment file (no model or trace work beyond checks)."""
    p = Path(path)
    if not p.is_file():
        raise DipsimError(f"experiment file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise _fail(p, f"not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise _fail(p, "an experiment is a mapping with keys name, trace(s), base, grid, zip")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise _fail(p, f"unknown top-level key '{unknown[0]}'; allowed: {', '.join(sorted(TOP_KEYS))}")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise _fail(p, "'base' must be a mapping of parameters")
    for k in flatten(base):
        _check_key(p, "base", k)
    if "trace" in raw and "traces" in raw:
        raise _fail(p, "give either 'trace' or 'traces', not both")
    axes_grid: dict[str, list[Any]] = {}
    axes_zip: dict[str, list[Any]] = {}
    for section, store in (("grid", axes_grid), ("zip", axes_zip)):
        sec = raw.get(section) or {}
        if not isinstance(sec, dict):
            raise _fail(p, f"'{section}' must be a mapping of parameter -> list of values")
        if section in raw and not sec:
            raise _fail(p, f"'{section}' has no axes; give parameter: [values, ...] or leave '{section}' out "
                           f"(no grid and no zip is a single point: the base)")
        for k, vals in sec.items():
            _check_key(p, section, k)
            if not isinstance(vals, list):
                raise _fail(p, f"{section}.{k} must be a list of values, got {type(vals).__name__}")
            if not vals:
                raise _fail(p, f"{section}.{k} is an empty axis")
            store[k] = vals
    if axes_zip and len({len(v) for v in axes_zip.values()}) != 1:
        lens = ", ".join(f"{k}: {len(v)}" for k, v in axes_zip.items())
        raise _fail(p, f"zip axes must have the same length ({lens})")
    both = sorted(set(axes_grid) & set(axes_zip))
    if both:
        raise _fail(p, f"key '{both[0]}' is both a grid and a zip axis")
    traces_list = raw.get("traces") if "traces" in raw else [raw["trace"]] if "trace" in raw else []
    if "trace" in axes_grid or "trace" in axes_zip:
        traces_list = [None]
    elif not traces_list and "trace" not in base:
        raise _fail(p, "no trace: give 'trace: PATH' or 'trace: {model: smollm2-135m, tokens: 1024}'")
    elif not traces_list:
        traces_list = [base["trace"]]
    axis_names = list(axes_grid) + list(axes_zip)

    points: list[Point] = []
    dropped: list[tuple[str, str]] = []
    grid_combos = list(itertools.product(*axes_grid.values())) if axes_grid else [()]
    zip_combos = list(zip(*axes_zip.values())) if axes_zip else [()]
    seen = set()
    for tr in traces_list:
        for gvals in grid_combos:
            for zvals in zip_combos:
                params = json.loads(json.dumps(base))
                if tr is not None:
                    params["trace"] = tr
                for k, v in list(zip(axes_grid, gvals)) + list(zip(axes_zip, zvals)):
                    _set(params, k, v)
                _resolve_trace_path(p, params)
                _drop_inapplicable(params)
                shown = {k: _get(params, k) for k in axis_names if _get(params, k) is not None}
                if len(traces_list) > 1:
                    shown = {"trace": params["trace"], **shown}
                readable = ",".join(f"{k}={_short(v)}" for k, v in shown.items()) or "base"
                h = point_hash(params)
                if h in seen:
                    continue
                seen.add(h)
                reason = check_point(params, p, check_traces=check_traces)
                if reason:
                    dropped.append((readable, reason))
                    continue
                points.append(Point(f"{readable}#{h}", params))
    if not points:
        why = f" (dropped: {dropped[0][1]})" if dropped else ""
        raise _fail(p, f"the experiment has no valid points{why}")
    return Experiment(p, str(raw.get("name") or p.stem), raw, points, dropped)


MASKING_PARAMS = ("gamma", "fixed_top_n", "seed")


def _drop_inapplicable(params: dict[str, Any]) -> None:
    """Masking parameters that the point's policy does not take are left out (``gamma`` in the base
    applies to the dip-ca points of a sweep and not to its dense ones)."""
    from . import masking
    from .masking.base import policy_params

    cls = masking.REGISTRY.get(params.get("masking", "dip"))
    if cls is None:
        return  # check_point names the unknown policy
    accepted = set(policy_params(cls))
    for k in MASKING_PARAMS:
        if k in params and k not in accepted:
            del params[k]


def _get(params: dict[str, Any], key: str) -> Any:
    cur: Any = params
    for part in key.split("."):
        cur = (cur or {}).get(part) if isinstance(cur, dict) else None
    return cur


def _resolve_trace_path(exp_path: Path, params: dict[str, Any]) -> None:
    tr = params.get("trace")
    if isinstance(tr, str) and not os.path.isabs(tr):
        cand = (exp_path.parent / tr)
        if not Path(tr).exists() and cand.exists():
            params["trace"] = str(cand)


def check_point(params: dict[str, Any], exp_path: Path, *, check_traces: bool = True) -> str | None:
    """None when the point can run; else the reason it is dropped. Raises for errors in the file
    that no point can survive (unknown names, missing files, wrong types)."""
    from . import caches, masking
    from .allocation import SCHEMES

    m = params.get("masking", "dip")
    c = params.get("cache", "lru")
    try:
        pol_cls = masking.REGISTRY.get_class(m)
        cache_cls = caches.REGISTRY.get_class(c)
    except DipsimError as e:
        raise _fail(exp_path, str(e)) from None
    a = params.get("allocation", "uniform")
    if a not in SCHEMES:
        raise _fail(exp_path, f"unknown allocation '{a}'; allowed: {', '.join(SCHEMES)}")
    dev = params.get("device")
    if dev is not None:
        _check_device(exp_path, dev)
    tr = params.get("trace")
    if tr is None:
        raise _fail(exp_path, "a point has no trace")
    if isinstance(tr, dict):
        unknown = sorted(set(tr) - {"model", "tokens", "text", "context"})
        if unknown or "model" not in tr:
            raise _fail(exp_path, f"trace mapping needs 'model' (and optional tokens, text, context); got "
                                  f"{', '.join(sorted(tr))}")
    elif check_traces and not Path(str(tr)).is_file():
        raise _fail(exp_path, f"trace file not found: {tr}")
    if cache_cls.offline and pol_cls.cache_aware:
        return f"{c} is an offline oracle and {m} is cache-aware"
    if cache_cls.offline and params.get("accuracy"):
        return f"{c} needs the future and cannot run in the closed loop (accuracy: true)"
    if params.get("dram_fraction") is not None and params.get("dram_bytes") is not None:
        return "both dram_fraction and dram_bytes given"
    try:
        masking.make(m, **{k: params[k] for k in MASKING_PARAMS if k in params})
    except DipsimError as e:
        if "has no parameter" in str(e):
            return str(e)
        raise _fail(exp_path, str(e)) from None
    for k in ("keep", "keep_up", "keep_gate", "keep_down", "dram_fraction", "gamma"):
        v = params.get(k)
        if v is None:
            continue
        vals = v if isinstance(v, list) else [v]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            raise _fail(exp_path, f"'{k}' must be a number, got {v!r}")
    return None


def _check_device(exp_path: Path, dev: Any) -> None:
    try:
        from .hardware import load_device
    except ImportError:  # pragma: no cover
        raise _fail(exp_path, "hardware profiles are not available") from None
    try:
        load_device(dev)
    except DipsimError as e:
        raise _fail(exp_path, str(e)) from None


# --------------------------------------------------------------------------------- running a point
_TRACE_CACHE: dict[str, Any] = {}


def trace_for(spec: Any, progress: bool = False):
    """Load (memory-mapped, cached per process) the trace a point names; capture it if it is a
    {model, tokens} mapping whose cached capture does not exist yet."""
    import traces

    if isinstance(spec, dict):
        path = captured_trace_path(spec)
        if not path.exists():
            traces.capture(spec["model"], path, tokens=int(spec.get("tokens", 1024)), text=spec.get("text"),
                           context=int(spec.get("context", 512)), progress=progress)
    else:
        path = Path(str(spec))
    key = str(path)
    if key not in _TRACE_CACHE:
        if len(_TRACE_CACHE) > 4:
            _TRACE_CACHE.clear()
        _TRACE_CACHE[key] = traces.load(path)
    return _TRACE_CACHE[key]


def captured_trace_path(spec: dict[str, Any]) -> Path:
    text = spec.get("text")
    tag = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{spec['model']}-{int(spec.get('tokens', 1024))}{'-' + Path(text).stem if text else ''}-{tag}"
    return cache_root() / "traces" / f"{name.replace('/', '_')}.safetensors"


REPLAY_KEYS = ("keep", "keep_up", "keep_gate", "keep_down", "dram_fraction", "dram_bytes", "weight_format",
               "warmup", "calib_tokens", "tokens", "gamma", "fixed_top_n", "seed", "cache_params", "allocation")


NOT_REPLAY = ("device", "engine", "layout", "accuracy", "accuracy_tokens")
_LOGS: dict[str, Any] = {}


def replay_key(params: dict[str, Any]) -> str:
    """Points with the same replay key share one replay (they differ only in device, engine, ...)."""
    return json.dumps({k: v for k, v in params.items() if k not in NOT_REPLAY}, sort_keys=True, default=str)


def _replayed(params: dict[str, Any], threads: int | None):
    from .replay import replay

    key = replay_key(params)
    if key not in _LOGS:
        if len(_LOGS) >= 2:
            _LOGS.pop(next(iter(_LOGS)))
        trace = trace_for(params["trace"])
        kw = {k: params[k] for k in REPLAY_KEYS if k in params}
        _LOGS[key] = replay(trace, params.get("masking", "dip"), params.get("cache", "lru"), threads=threads, **kw)
    return _LOGS[key]


def run_points(group: list[dict[str, Any]], threads: int | None = 1) -> list[dict[str, Any]]:
    """Evaluate points that share a replay (see :func:`replay_key`), in order."""
    return [run_point(p, threads) for p in group]


def run_point(params: dict[str, Any], threads: int | None = 1) -> dict[str, Any]:
    """Evaluate one point: replay, then the engine if a device is given, then accuracy if asked."""
    t0 = time.perf_counter()
    trace = trace_for(params["trace"])
    log = _replayed(params, threads)
    tot = log.totals()
    row: dict[str, Any] = {f"m.{k}": v for k, v in tot.items() if not isinstance(v, dict)}
    for g, v in tot["groups"].items():
        for k, x in v.items():
            row[f"m.{g}.{k}"] = x
    if params.get("device") is not None:
        from .engine import simulate

        res = simulate(log, params["device"], layout=params.get("layout"), **(params.get("engine") or {}))
        for k, v in res.summary().items():
            if not isinstance(v, (dict, list)):
                row[f"m.{k}"] = v
    if params.get("accuracy"):
        from .accuracy import evaluate

        model, kw = accuracy_run(params, trace.meta)
        acc = evaluate(model, [accuracy_config(params)], **kw)[0]
        for k in ACCURACY_METRICS:
            row[f"m.{ACCURACY_NAMES.get(k, k)}"] = acc.get(k)
    row["m.seconds"] = time.perf_counter() - t0
    return row


# --------------------------------------------------------------------------------- accuracy columns
ACCURACY_METRICS = ("perplexity", "kl_to_dense", "top1_agreement", "hit_rate", "flash_bytes_per_token",
                    "open_loop_hit_rate", "dense_perplexity")
ACCURACY_NAMES = {"hit_rate": "closed_loop_hit_rate", "flash_bytes_per_token": "closed_loop_flash_bytes_per_token",
                  "open_loop_hit_rate": "accuracy_open_loop_hit_rate"}


def accuracy_config(params: dict[str, Any]) -> dict[str, Any]:
    """The closed-loop configuration of a point (what simulator.accuracy.evaluate takes)."""
    keys = ("masking", "gamma", "fixed_top_n", "seed", "keep", "keep_up", "keep_gate", "keep_down", "cache",
            "cache_params", "allocation", "dram_fraction", "dram_bytes", "weight_format")
    return {k: params[k] for k in keys if k in params}


def accuracy_run(params: dict[str, Any], meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Model and run options of a point's accuracy columns: the trace's model and text, the point's
    warm-up and calibration prefix, ``accuracy_tokens`` tokens (default: the trace's)."""
    spec = params["trace"]
    if isinstance(spec, dict):
        model, text = spec["model"], spec.get("text")
    elif meta.get("corpus") == "pydoc-topics":
        model, text = str(meta["model"]), None
    else:
        raise DipsimError(f"accuracy columns need the trace's text: give the trace as {{model, tokens, text}} "
                          f"(this trace's corpus is {meta.get('corpus')!r})")
    kw = {"text": text, "tokens": int(params.get("accuracy_tokens") or meta["n_tokens"]),
          "warmup": int(params.get("warmup", 16)), "calib_tokens": int(params.get("calib_tokens", 64))}
    return model, kw


def precompute_accuracy(points: list[Point], say: Callable[[str], None], progress: bool) -> None:
    """Run every point's closed-loop configuration before the sweep, grouped per (model, text,
    tokens) so that the model loads and the dense pass runs once per group; the results land in the
    accuracy store that the points then read."""
    from .accuracy import evaluate

    batches: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]] = {}
    for p in points:
        if not p.params.get("accuracy"):
            continue
        model, kw = accuracy_run(p.params, trace_for(p.params["trace"]).meta)
        key = json.dumps([model, kw], sort_keys=True, default=str)
        batches.setdefault(key, (model, kw, []))[2].append(accuracy_config(p.params))
    for model, kw, cfgs in batches.values():
        unique = list({json.dumps(c, sort_keys=True): c for c in cfgs}.values())
        say(f"accuracy in the loop: {len(unique)} configurations of {model} over {kw['tokens']} tokens")
        evaluate(model, unique, progress=progress, **kw)


# --------------------------------------------------------------------------------- results
def _write_parquet(out: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    with atomic(out / "results.parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)


def load_results(out: str | os.PathLike):
    """The results of a sweep directory as a DataFrame (finished points only)."""
    import pandas as pd

    out = Path(out)
    p = out / "results.parquet"
    if p.exists():
        return pd.read_parquet(p)
    rows = _read_point_files(out)
    if not rows:
        raise DipsimError(f"{out}: no results (neither results.parquet nor points/*.json)")
    return pd.DataFrame(rows)


def _read_point_files(out: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((out / "points").glob("*.json")):
        try:
            rows.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a file being written when the run was killed: that point reruns
    return rows


def prepare_output(exp: Experiment, out: Path) -> dict[str, dict[str, Any]]:
    """Create or reopen ``out``; refuse a directory holding a different sweep; return finished rows."""
    meta_path = out / "sweep.json"
    if out.exists() and any(out.iterdir()):
        if not meta_path.exists():
            raise DipsimError(f"{out}: exists and is not a dipsim sweep directory (no sweep.json); choose another --out")
        meta = json.loads(meta_path.read_text())
        if meta.get("experiment_digest") != exp.digest:
            raise DipsimError(f"{out}: holds the results of a different experiment ({meta.get('name')!r} from "
                              f"{meta.get('experiment')}, whose trace, base or axes differ from this one's); choose "
                              f"another --out, or delete it to start over")
    out.mkdir(parents=True, exist_ok=True)
    (out / "points").mkdir(exist_ok=True)
    atomic_write(meta_path, json.dumps({"name": exp.name, "experiment": str(exp.path),
                                         "experiment_digest": exp.digest, "sweep_version": SWEEP_VERSION,
                                         "points": len(exp.points), "dropped": exp.dropped}, indent=1).encode())
    atomic_write(out / "experiment.yaml", yaml.safe_dump({"name": exp.name, "source": str(exp.path),
                                                           "raw": exp.raw,
                                                           "points": [{"key": p.key, **p.params} for p in exp.points],
                                                           "dropped": [{"key": k, "reason": r} for k, r in exp.dropped]},
                                                          sort_keys=False).encode())
    done = {}
    for row in _read_point_files(out):
        done[row["key"]] = row
    return done


def _row(point: Point, metrics: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"key": point.key}
    for k, v in flatten(point.params).items():
        row[f"p.{k}"] = v if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True)
    row.update(metrics)
    return row


def run_sweep(exp: Experiment, out: str | os.PathLike, *, jobs: int = 1, executor: str = "local",
              scheduler: str | None = None, progress: bool = True,
              log: Callable[[str], None] | None = None) -> Path:
    """Run every unfinished point of ``exp`` and keep ``out/results.parquet`` current."""
    out = Path(out)
    say = log or (lambda s: print(s, file=sys.stderr))
    if executor not in ("local", "dask"):
        raise DipsimError(f"unknown executor {executor!r}; allowed: local, dask")
    if jobs < 1:
        raise DipsimError(f"--jobs must be >= 1, got {jobs}")
    done = prepare_output(exp, out)
    for k, reason in exp.dropped:
        say(f"dropped {k}: {reason}")
    todo = [p for p in exp.points if p.key not in done]
    rows = [done[p.key] for p in exp.points if p.key in done]
    if done:
        say(f"resuming: {len(done)} of {len(exp.points)} points already finished")
    # captured traces are made once, here, not by every worker
    for spec in {json.dumps(p.params["trace"], sort_keys=True) for p in todo}:
        s = json.loads(spec)
        if isinstance(s, dict) and not captured_trace_path(s).exists():
            say(f"capturing trace {s} (once; cached in {captured_trace_path(s)})")
            trace_for(s, progress=progress)
    if any(p.params.get("accuracy") for p in todo):
        precompute_accuracy(todo, say, progress)
    if rows:
        _write_parquet(out, rows)
    from tqdm import tqdm

    bar = tqdm(total=len(exp.points), initial=len(done), unit="pt", desc=f"sweep {exp.name}", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def finish(point: Point, metrics: dict[str, Any]) -> None:
        row = _row(point, metrics)
        atomic_write(out / "points" / f"{point.key.rsplit('#', 1)[1]}.json",
                      json.dumps(row, default=json_default).encode())
        rows.append(row)
        _write_parquet(out, rows)
        bar.update(1)

    tasks = _tasks(todo, jobs)
    try:
        if not todo:
            pass
        elif executor == "local" and jobs == 1:
            for task in tasks:
                for p in task:
                    finish(p, run_point(p.params, threads=None))
        elif executor == "local":
            from concurrent.futures import ProcessPoolExecutor, as_completed

            pool = ProcessPoolExecutor(jobs, initializer=_worker_signals)
            try:
                futs = {pool.submit(run_points, [p.params for p in task], 1): task for task in tasks}
                for f in as_completed(futs):
                    for p, row in zip(futs[f], f.result()):
                        finish(p, row)
            except BaseException:
                # interrupted or failed: drop the queued tasks and stop the workers now (finished
                # points are already on disk), rather than waiting for the rest of the sweep
                procs = list(getattr(pool, "_processes", {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in procs:
                    proc.terminate()
                raise
            pool.shutdown()
        else:
            _run_dask(tasks, jobs, scheduler, finish)
    finally:
        bar.close()
    _write_parquet(out, [r for p in exp.points for r in rows if r["key"] == p.key])
    return out / "results.parquet"


def _worker_signals() -> None:
    """Workers die on SIGTERM (the parent, not they, turns it into a clean stop) and leave Ctrl-C to
    the parent, which stops them."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _tasks(todo: list[Point], jobs: int) -> list[list[Point]]:
    """Points grouped by replay key (one replay per task), groups cut so that there are at least
    two tasks per worker when the sweep allows it."""
    groups: dict[str, list[Point]] = {}
    for p in todo:
        groups.setdefault(replay_key(p.params), []).append(p)
    want = 2 * jobs if jobs > 1 else 1
    size = max(1, -(-len(todo) // want))
    tasks = []
    for g in groups.values():
        tasks.extend(g[i:i + size] for i in range(0, len(g), size))
    return tasks


def _run_dask(tasks: list[list[Point]], jobs: int, scheduler: str | None, finish) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DipsimError("the dask executor needs dask[distributed]: pip install 'dask[distributed]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futs = {client.submit(run_points, [p.params for p in task], 1,
                              key=f"dipsim-{task[0].key.rsplit('#', 1)[1]}-{len(task)}", pure=False): task
                for task in tasks}
        for f in as_completed(list(futs)):
            for p, row in zip(futs[f], f.result()):
                finish(p, row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
