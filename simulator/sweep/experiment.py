"""Experiment files: read strictly, expanded into points, every point checked before any work.

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
    zip: {masking: [dip, glu-prune], keep: [0.5, 0.5]}   # lockstep (all lists the same length)

Keys are the run parameters of ``simulator.config`` (nested ones with a dot: ``engine.overlap_io``,
``layout.reorder``, ``cache_params.hot_fraction``); ``trace`` may itself be an axis. A masking
policy's own parameter in ``base`` (``gamma``) applies to the points whose policy takes it. Every
point's values are checked when the experiment loads (``config.PointConfig``), with errors naming
the file, the point and the key; points that make no sense (belady with dip-ca) are dropped with
the reason logged. The YAML is plain data: tags beyond strings, numbers, booleans, null, lists and
mappings are refused, as are keys given twice, aliases that recurse or expand beyond a small budget
and nesting deeper than an experiment needs (``common.plainyaml``); an experiment expands to at most
``MAX_POINTS`` points, counted before any is built.
``plugins: [policy.py, my_package.policies]`` loads plugins first (``simulator.plugins``; paths also
beside the file); a point using a plugin's class has the plugin's source hash in its key.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from common.errors import DipsimError
from traces.format import load as load_trace
from traces.prefix import resolve as resolve_prefix

from .. import plugins
from ..config import PointConfig, point_keys
from ..engine import device_models

TOP_KEYS = ("name", "description", "plugins", "trace", "traces", "base", "grid", "zip", "search")
MAX_BYTES = 8 << 20       # experiment files are a few kilobytes
MAX_POINTS = 20_000       # points of one experiment: each is checked at load and keeps a row and a file


@dataclass(frozen=True)
class Point:
    key: str                 # readable axis values + "#" + hash
    params: dict[str, Any]   # the resolved point (base + axes), nested mappings kept
    config: PointConfig      # the same, checked

    @property
    def hash(self) -> str:
        return self.key.rsplit("#", 1)[1]


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


def point_hash(params: dict[str, Any]) -> str:
    source = plugins.source_key(params)     # a plugin's classes: its source hash joins the key
    blob = json.dumps({**params, "plugins": source} if source else params, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------------------- expansion
def _fail(path: Path, msg: str) -> DipsimError:
    return DipsimError(f"{path}: {msg}")


def _check_key(path: Path, where: str, k: Any, keys: list[str]) -> None:
    if not isinstance(k, str) or k.split(".", 1)[0] not in keys:
        raise _fail(path, f"unknown key {k!r} in {where}; allowed: {', '.join(keys)}")


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    if "." in key:
        head, rest = key.split(".", 1)
        sub = dict(d[head]) if isinstance(d.get(head), dict) else {}
        _set(sub, rest, value)
        d[head] = sub
    else:
        d[key] = value


def _get(params: dict[str, Any], key: str) -> Any:
    cur: Any = params
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


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


def _axes(p: Path, raw: dict[str, Any], keys: list[str]) -> tuple[dict[str, list], dict[str, list]]:
    axes: dict[str, dict[str, list]] = {"grid": {}, "zip": {}}
    for section, store in axes.items():
        sec = raw.get(section)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            raise _fail(p, f"'{section}' must be a mapping of parameter -> list of values")
        if not sec:
            raise _fail(p, f"'{section}' has no axes; give parameter: [values, ...] or leave '{section}' out "
                           f"(no grid and no zip is a single point: the base)")
        for k, vals in sec.items():
            _check_key(p, section, k, keys)
            if not isinstance(vals, list):
                raise _fail(p, f"{section}.{k} must be a list of values, got {type(vals).__name__}")
            if not vals:
                raise _fail(p, f"{section}.{k} is an empty axis")
            store[k] = vals
    if axes["zip"] and len({len(v) for v in axes["zip"].values()}) != 1:
        lens = ", ".join(f"{k}: {len(v)}" for k, v in axes["zip"].items())
        raise _fail(p, f"zip axes must have the same length ({lens})")
    both = sorted(set(axes["grid"]) & set(axes["zip"]))
    if both:
        raise _fail(p, f"key '{both[0]}' is both a grid and a zip axis")
    return axes["grid"], axes["zip"]


def _traces(p: Path, raw: dict[str, Any], base: dict[str, Any], axis_keys: set[str]) -> list[Any]:
    if "trace" in raw and "traces" in raw:
        raise _fail(p, "give either 'trace' or 'traces', not both")
    if "trace" in axis_keys:
        return [None]
    if "traces" in raw:
        if not isinstance(raw["traces"], list) or not raw["traces"]:
            raise _fail(p, "'traces' must be a non-empty list of trace paths or {model, tokens} mappings")
        return list(raw["traces"])
    if "trace" in raw:
        return [raw["trace"]]
    if "trace" in base:
        return [base["trace"]]
    raise _fail(p, "no trace: give 'trace: PATH' or 'trace: {model: smollm2-135m, tokens: 1024}'")


def load_experiment(path: str | os.PathLike, *, check_traces: bool = True, allow_search: bool = False) -> Experiment:
    """Read, check and expand an experiment file: every point's values, its trace and device, before any
    work; a file whose only axes are a ``search:`` section (``simulator.search``) needs ``allow_search``."""
    from common import plainyaml

    p = Path(path)
    raw = plainyaml.read(p, "experiment file", max_bytes=MAX_BYTES)   # plain data, no alias bombs, no repeats
    if not isinstance(raw, dict):
        raise _fail(p, "an experiment is a mapping with keys name, trace(s), base, grid, zip")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise _fail(p, f"unknown top-level key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    for k in ("name", "description"):
        if k in raw and not isinstance(raw[k], str):
            raise _fail(p, f"'{k}' must be text, got {raw[k]!r}")
    name = raw.get("name")          # the default results folder is results/<name>: a folder name, not a path
    if name and (name in (".", "..") or "/" in name or "\0" in name or len(name.encode("utf-8", "replace")) > 255):
        raise _fail(p, f"'name' must be a plain folder name (no '/', NUL, '.' or '..'; at most 255 bytes), got {name!r}")
    plugins.load(raw.get("plugins"), where=f"{p}: plugins", base=p.parent)   # first: their names become keys
    keys = point_keys()
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise _fail(p, "'base' must be a mapping of parameters")
    for k in flatten(base):
        _check_key(p, "base", k, keys)
    grid, zipped = _axes(p, raw, keys)
    if "search" in raw and not (grid or zipped or allow_search):
        raise _fail(p, "holds a 'search:' section and no grid or zip: run it with dipsim optimize")
    traces = _traces(p, raw, base, set(grid) | set(zipped))
    _check_size(p, traces, grid, zipped)
    exp = Experiment(p, str(raw.get("name") or p.stem), raw, [], [])
    _expand(exp, base, grid, zipped, traces, check_traces)
    _check_overridden(exp, base, list(grid) + list(zipped), check_traces)
    if not exp.points:
        why = f" (dropped: {exp.dropped[0][1]})" if exp.dropped else ""
        raise _fail(p, f"the experiment has no valid points{why}")
    return exp


def _check_size(p: Path, traces: list, grid: dict[str, list], zipped: dict[str, list]) -> None:
    """Refuse an experiment of more than ``MAX_POINTS`` points before expanding it (a 1000 x 1000
    grid is a million points to check; 1000^3 would not fit in memory)."""
    sizes = ([("traces", len(traces))] if len(traces) > 1 else []) + [(k, len(v)) for k, v in grid.items()]
    if zipped:
        sizes.append((f"zip({', '.join(zipped)})", len(next(iter(zipped.values())))))
    n = 1
    for _, k in sizes:
        n *= k
    if n > MAX_POINTS:
        shown = " x ".join(f"{k} {name}" for name, k in sizes)
        raise _fail(p, f"the axes expand to {n:,} points ({shown}); the limit is {MAX_POINTS:,} points per "
                       f"experiment: thin the axes or split it into several experiments")


def foreign(params: dict[str, Any]) -> set[str]:
    """The masking-policy parameters in ``params`` its policy does not take (a base's gamma on a dip point)."""
    from .. import masking
    takes, m = {n: set(masking.parameters(n)) for n in masking.names()}, params.get("masking", "dip")
    every = set().union(*takes.values())
    return every & set(params) - takes.get(m if isinstance(m, str) else "", every)   # a bad name: PointConfig's


def _expand(exp: Experiment, base, grid, zipped, traces, check_traces: bool) -> None:
    p = exp.path
    axis_names = list(grid) + list(zipped)
    grid_combos = list(itertools.product(*grid.values())) if grid else [()]
    zip_combos = list(zip(*zipped.values())) if zipped else [()]
    base_json = json.dumps(base)
    seen: dict[str, str] = {}      # point hash -> its readable key
    for tr in traces:
        for gvals in grid_combos:
            for zvals in zip_combos:
                params = json.loads(base_json)
                if tr is not None:
                    params["trace"] = tr
                for k, v in list(zip(grid, gvals)) + list(zip(zipped, zvals)):
                    _set(params, k, v)
                _resolve_trace_path(p, params)
                dropped = foreign(params)          # gamma of a dip point
                unused = sorted(k for k in dropped if k in axis_names)
                asked = _readable(params, axis_names, traces) if unused else ""
                params = {k: v for k, v in params.items() if k not in dropped}
                readable = _readable(params, axis_names, traces)
                h = point_hash(params)
                if h in seen:
                    if unused:    # an axis value the policy does not take: say where the point went
                        m = params.get("masking", "dip")
                        exp.dropped.append((asked, f"the same point as {seen[h]}: {m} takes no {', '.join(unused)}"))
                    continue
                seen[h] = readable
                cfg = _check_point(p, readable, params, check_traces)
                reason = cfg.drop_reason()
                if reason:
                    exp.dropped.append((readable, reason))
                else:
                    exp.points.append(Point(f"{readable}#{h}", params, cfg))


def _check_overridden(exp: Experiment, base: dict[str, Any], axes: list[str], check_traces: bool) -> None:
    """A base value that every point overrides by an axis (``gamma: -0.1`` under a gamma axis) is
    still checked: in the first point that has the key, in place of the axis's value."""
    for k in flatten(base):
        host = next((pt for pt in exp.points if _get(pt.params, k) is not None), None) if k in axes else None
        if host is None:
            continue
        params = json.loads(json.dumps(host.params))
        _set(params, k, _get(base, k))
        _check_point(exp.path, f"base (its {k} is overridden by the axis, but must be valid)", params, check_traces)


def _readable(params: dict[str, Any], axis_names: list[str], traces) -> str:
    shown = {k: _get(params, k) for k in axis_names if _get(params, k) is not None}
    if len(traces) > 1:
        shown = {"trace": params["trace"], **shown}
    return ",".join(f"{k}={_short(v)}" for k, v in shown.items()) or "base"


#: point keys that name files: a relative path is looked up beside the experiment file when it does
#: not exist from the working directory
FILE_KEYS = ("trace", "variant", "adapter", "predictor_file")


def _resolve_trace_path(exp_path: Path, params: dict[str, Any]) -> None:
    for key in FILE_KEYS:
        v = params.get(key)
        if isinstance(v, str) and v and not os.path.isabs(v):
            cand = exp_path.parent / v
            if not os.path.exists(v) and os.path.exists(cand):
                params[key] = str(cand)


def _check_point(p: Path, readable: str, params: dict[str, Any], check_traces: bool) -> PointConfig:
    """The point's checked configuration; its device and trace file must exist."""
    where = f"{p}: point {readable}"
    cfg = PointConfig.from_flat(params, where)
    for key in FILE_KEYS[1:]:           # method files: say where they were looked for and how to build them
        v = params.get(key)
        if isinstance(v, str) and v and not os.path.lexists(v):     # a link that loops: its reader names it
            raise DipsimError(f"{where}: {key}: file not found: {v} (looked in {Path.cwd()} and beside the "
                              f"experiment, {os.path.abspath(p.parent / v)}); method files are built by "
                              f"benchmarks/methods.py (see the experiment's description)")
    if cfg.variant or cfg.adapter:      # the files' headers: kind and id (no tensor is read)
        from ..methods.apply import check

        check({"variant": cfg.variant, "adapter": cfg.adapter}, where)
    if cfg.device is not None:
        try:
            _check_device(cfg.device, _file_version(cfg.device))
        except DipsimError as e:
            raise DipsimError(f"{where}: device: {e}") from None
    if check_traces and isinstance(cfg.trace, str):
        from common.io import input_file

        try:
            tp = input_file(cfg.trace, "trace file")
        except DipsimError as e:
            raise DipsimError(f"{where}: {e}") from None
        _check_against_trace(where, cfg, _trace_meta(str(tp.resolve()), tp.stat().st_mtime_ns))
    elif not isinstance(cfg.trace, str):
        if check_traces and cfg.trace.synthetic is None and _model_error(cfg.trace.model):
            raise DipsimError(f"{where}: trace: {_model_error(cfg.trace.model)}")
        if check_traces and cfg.trace.synthetic is None and cfg.trace.prefix_token not in ("auto", "none"):
            resolve_prefix(cfg.trace.prefix_token, cfg.trace.model, f"{where}: trace: prefix_token")
        _check_against_trace(where, cfg, {"n_tokens": cfg.trace.tokens, "model": _model_name(cfg.trace.model)})
    return cfg


def _model_name(model: str) -> str:
    from traces.models import model_name

    return model_name(model)


@lru_cache(maxsize=64)
def _model_error(model: str) -> str | None:
    """Why the trace's model cannot load, or None (checked once per name; nothing is loaded)."""
    from traces.models import check_available

    try:
        check_available(model)
    except DipsimError as e:
        return str(e)
    return None


@lru_cache(maxsize=64)
def _check_device(device: str, version: tuple) -> None:
    """A device profile loads and builds its models (checked once per name and file version)."""
    device_models(device)


def _file_version(name: str) -> tuple:
    st = os.stat(name) if os.path.exists(name) else None
    return (st.st_mtime_ns, st.st_size) if st else ()


@lru_cache(maxsize=32)
def _trace_meta(path: str, version: int) -> dict[str, Any]:
    """A trace's header, checked (the data is read by the points)."""
    return dict(load_trace(path, check_finite=False).meta)


def _check_against_trace(where: str, cfg: PointConfig, meta: dict[str, Any]) -> None:
    """What only the trace can tell: token counts, and per-layer keeps against its depth."""
    from ..replay import make_groups

    from common.store import check_made_for, read_meta

    for key in ("variant", "adapter"):      # a method file made for another model is refused, accuracy or not
        if getattr(cfg, key):
            dims = {k: meta[k] for k in ("model", "n_layers", "d_model", "d_ff") if k in meta}
            try:
                check_made_for(read_meta(getattr(cfg, key), key), dims, getattr(cfg, key))
            except DipsimError as e:
                raise DipsimError(f"{where}: {key}: {e}") from None
    rc, n = cfg.replay, int(meta["n_tokens"])
    if rc.tokens is not None and rc.tokens > n:
        raise DipsimError(f"{where}: tokens: {rc.tokens} exceeds the trace's {n} tokens")
    T = rc.tokens or n
    if rc.warmup >= T:
        raise DipsimError(f"{where}: warmup: must be below the {T} tokens replayed, got {rc.warmup}")
    if "n_layers" in meta:
        try:
            make_groups(meta, rc)
        except DipsimError as e:
            raise DipsimError(f"{where}: {e}") from None
