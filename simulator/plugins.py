"""Plugins: masking policies, cache policies and allocation schemes kept outside the package.

A plugin is a Python module that registers classes with the decorators the built-in ones use
(``@register_masking``, ``@register_cache``, ``@register_allocation``; see ``examples/plugins/``).
It is found by

* a file path or an importable module name: ``plugins: [policies/mine.py, my_package.policies]``
  in an experiment file, ``--plugin FILE|MODULE`` on every verb, :func:`load` from Python;
* an entry point of an installed distribution in the group ``dipsim.masking``, ``dipsim.caches``
  or ``dipsim.allocation`` (``[project.entry-points."dipsim.masking"] mine = "my_package.policies"``),
  which :func:`load` imports in every process, whatever else it is asked for.

Once loaded, a plugin's names work wherever a built-in name does, with their parameters checked the
same way (they are declared the same way). Sweeps hand the plugins they loaded to every worker
process (the local pool and Dask), which loads them before it resolves any name: :func:`loaded`
lists them, :func:`load` takes that list, and a worker refuses a file that changed since the parent
read it. Every problem is one line naming the plugin: it cannot be imported (the exception and the
line), it registers nothing, it reuses a registered name (a built-in's or another plugin's), or a
class breaks the interface -- each registered class runs a tiny probe at load time (a masking policy
selects on 2 layers x 16 columns and must return bool masks of that shape; a cache steps 8 random
sets, its hits a subset of each set, never over its capacity, ``run_layer`` equal to ``step``; an
allocation splits a small budget), and its parameters must be declared with ``common.params.param``
and have defaults.

Keys. Results computed with a plugin's classes are stored under keys that include the SHA-256 of the
plugin module's source (:func:`source_key`): sweep points (their hash), dense baselines, replays
kept in memory and the closed-loop accuracy store. Editing the plugin file therefore reruns what it
touches instead of returning stale figures. Only the module's own file is hashed: a plugin that
imports helpers from other files of its own should bump a version string in the module when those
change. Built-in names add nothing to any key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common.errors import DipsimError
from common.params import params_of

from . import allocation, caches, masking
from .config import POINT_KEYS, ReplayConfig

GROUPS = ("dipsim.masking", "dipsim.caches", "dipsim.allocation")
REGISTRIES = {"masking": masking.REGISTRY, "cache": caches.REGISTRY, "allocation": allocation.REGISTRY}
BASES = {"masking": masking.MaskingPolicy, "cache": caches.CachePolicy, "allocation": allocation.Allocation}
#: the built-in names (everything registered before any plugin)
BUILTIN = {kind: frozenset(reg) for kind, reg in REGISTRIES.items()}
#: names a masking parameter cannot take: they are the run's own keys
RESERVED = frozenset([f.name for f in params_of(ReplayConfig)] + list(POINT_KEYS) + ["label", "masking_params"])
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_LOCK = threading.RLock()


@dataclass(frozen=True)
class Plugin:
    spec: str             # what load() was given, resolved: an absolute .py path or a module name
    origin: str           # how messages name it: the file, the module, or the entry point
    module: str           # the module's name in sys.modules
    digest: str           # SHA-256 of the module's source (first 16 hex digits)
    names: tuple[tuple[str, str], ...]   # (kind, name) it registered
    entry_point: bool = False


_LOADED: dict[str, Plugin] = {}
_OWNER: dict[tuple[str, str], Plugin] = {}
_ENTRY_POINTS_DONE = False


def load(specs: Sequence[Any] | None = (), *, where: str = "--plugin", base: str | os.PathLike | None = None
         ) -> list[Plugin]:
    """Load the installed distributions' entry points (once per process) and each plugin of ``specs``:
    a ``.py`` file (a relative path is looked up in the working directory, then in ``base``, e.g. an
    experiment file's folder), a module name, or a ``(spec, digest)`` pair as :func:`loaded` gives
    them (a worker: the source must still have that digest). Loading a plugin again is free; a file
    edited since it was loaded is loaded anew. ``where`` names the option or field in errors."""
    load_entry_points()
    if specs is not None and not isinstance(specs, (list, tuple)):
        raise DipsimError(f"{where}: expected a list of plugin files (.py) or module names, got {specs!r}")
    out = []
    for s in specs or ():
        expect = None
        if isinstance(s, tuple) and len(s) == 2:      # from loaded(), in a worker (YAML gives no tuples)
            s, expect = s
        if not isinstance(s, str) or not s.strip():
            raise DipsimError(f"{where}: expected a plugin file (.py) or a module name, got {s!r}")
        plugin = _load(_resolve(s.strip(), base, where))
        if expect is not None and plugin.digest != expect:
            raise DipsimError(f"plugin {plugin.origin}: changed since the run started (source hash {plugin.digest}, "
                              f"was {expect}); rerun to use the new version")
        out.append(plugin)
    return out


def loaded() -> list[tuple[str, str]]:
    """``(spec, digest)`` of every plugin this process loaded from a file or module name, in order:
    what a worker process passes to :func:`load` before it resolves a name."""
    return [(p.spec, p.digest) for p in _LOADED.values() if not p.entry_point]


def plugins() -> list[Plugin]:
    """Every plugin this process loaded (entry points included)."""
    return list(_LOADED.values())


def unload(plugin: Plugin | None = None) -> None:
    """Forget one loaded plugin, or all of them: their names leave the registries (a later
    :func:`load` imports them anew; entry points are loaded again by the next :func:`load`)."""
    global _ENTRY_POINTS_DONE
    with _LOCK:
        for p in [plugin] if plugin is not None else list(_LOADED.values()):
            _forget(p)
        if plugin is None:
            _ENTRY_POINTS_DONE = False


def source_key(cfg: Any) -> dict[str, str]:
    """``{"<kind>:<name>": digest}`` for the plugin names among a configuration's masking, cache and
    allocation (a ``ReplayConfig`` or a mapping with those keys); empty when all are built in."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k: getattr(cfg, k, None))
    out = {}
    for kind in ("masking", "cache", "allocation"):
        name = get(kind)
        owner = _OWNER.get((kind, name)) if isinstance(name, str) else None   # a bad value: its own check says so
        if owner is not None:
            out[f"{kind}:{name}"] = owner.digest
    return out


def load_entry_points() -> None:
    """Import the modules of the ``dipsim.*`` entry points of every installed distribution, once."""
    global _ENTRY_POINTS_DONE
    if _ENTRY_POINTS_DONE:
        return
    with _LOCK:
        for group in GROUPS:
            for ep in importlib.metadata.entry_points(group=group):
                dist = getattr(ep.dist, "name", None) or "?"
                origin = f"entry point {ep.name} = {ep.value} ({group}, distribution {dist})"
                if not _MODULE.fullmatch(ep.module):
                    raise DipsimError(f"plugin {origin}: {ep.module!r} is not a module name")
                _load(ep.module, origin=origin, entry_point=True)
                if ep.attr:
                    try:
                        ep.load()
                    except (ImportError, AttributeError):
                        raise DipsimError(f"plugin {origin}: module {ep.module} has no {ep.attr}") from None
        _ENTRY_POINTS_DONE = True


# ----------------------------------------------------------------------------------------- loading
def _resolve(s: str, base: str | os.PathLike | None, where: str) -> str:
    if not (s.endswith(".py") or "/" in s or os.sep in s):
        if not _MODULE.fullmatch(s):
            raise DipsimError(f"{where}: {s!r} is neither a plugin file (.py) nor a module name")
        return s
    p = Path(s).expanduser()
    if not p.is_absolute() and not p.exists() and base is not None and (Path(base) / p).exists():
        p = Path(base) / p
    if not p.is_file():
        looked = f" (looked in {Path.cwd()}{f' and {Path(base).resolve()}' if base is not None else ''})" \
            if not p.is_absolute() else ""
        raise DipsimError(f"{where}: plugin file not found: {s}{looked}" if not p.exists()
                          else f"{where}: plugin {s}: not a file")
    if p.suffix != ".py":
        raise DipsimError(f"{where}: plugin {s}: a plugin file is Python source ending in .py")
    return str(p.resolve())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _source(path: str | None, name: str) -> bytes:
    try:
        return Path(path).read_bytes() if path else name.encode()
    except OSError:
        return name.encode()


def _load(spec: str, *, origin: str | None = None, entry_point: bool = False) -> Plugin:
    is_file = spec.endswith(".py") and os.path.isabs(spec)
    origin = origin or spec
    with _LOCK:
        old = _LOADED.get(spec)
        if old is not None and (not is_file or old.digest == _digest(_source(spec, spec))):
            return old
        if old is not None:
            _forget(old)    # the file changed since: load it anew
        before = {kind: set(reg) for kind, reg in REGISTRIES.items()}
        try:
            mod = _import_file(spec) if is_file else importlib.import_module(spec)
        except DipsimError as e:     # a name registered twice, or the plugin's own check
            _rollback(before)
            raise DipsimError(f"plugin {origin}: {e}") from None
        except (Exception, SystemExit) as e:
            _rollback(before)
            raise DipsimError(f"plugin {origin}: cannot import it: {_why(e, spec if is_file else None)}") from None
        names = tuple((kind, n) for kind, reg in REGISTRIES.items() for n, cls in reg.items()
                      if n not in BUILTIN[kind] and (kind, n) not in _OWNER
                      and (n not in before[kind] or cls.__module__ == mod.__name__))
        if not names:
            _rollback(before, mod.__name__)
            raise DipsimError(f"plugin {origin}: registers nothing; decorate its classes with @register_masking(NAME), "
                              f"@register_cache(NAME) or @register_allocation(NAME)")
        plugin = Plugin(spec, origin, mod.__name__, _digest(_source(getattr(mod, "__file__", None), spec)), names,
                        entry_point)
        for kind, n in names:
            try:
                PROBES[kind](n)
            except DipsimError as e:
                _rollback(before, mod.__name__)
                raise DipsimError(f"plugin {origin}: {REGISTRIES[kind].kind} {n!r} {e}") from None
        _LOADED[spec] = plugin
        _OWNER.update({kn: plugin for kn in names})
        return plugin


def _import_file(path: str):
    name = "dipsim_plugin_" + re.sub(r"\W", "_", Path(path).stem) + "_" + _digest(path.encode())[:8]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod        # dataclasses and pickle look the module up by name
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def _why(e: BaseException, path: str | None) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if path and f.filename == path]
    text = " ".join(str(e).split())
    return f"{type(e).__name__}{': ' + text[:200] if text else ''}{f' (line {lines[-1]})' if lines else ''}"


def _rollback(before: dict[str, set[str]], module: str | None = None) -> None:
    for kind, reg in REGISTRIES.items():
        for n in [n for n in reg if n not in before[kind]]:
            del reg[n]
    if module is not None:
        sys.modules.pop(module, None)


def _forget(plugin: Plugin) -> None:
    for kind, n in plugin.names:
        REGISTRIES[kind].pop(n, None)
        _OWNER.pop((kind, n), None)
    _LOADED.pop(plugin.spec, None)
    sys.modules.pop(plugin.module, None)


# ----------------------------------------------------------------------------------------- probes
L, N, K, STEPS = 2, 16, 5, 8


class _Broken(DipsimError):
    """A class breaks the plugin interface (the message says how)."""


def _declared(cls: type, kind: str) -> None:
    """The class derives from the kind's base and, for dataclass kinds, declares every field with
    ``common.params.param`` and a default."""
    if not (isinstance(cls, type) and issubclass(cls, BASES[kind])):
        raise _Broken(f"is not a subclass of {BASES[kind].__module__}.{BASES[kind].__qualname__}")
    if kind == "cache":
        sig = inspect.signature(cls.__init__).parameters
        missing = [n for n in caches.policy_params(cls.name) if sig[n].default is inspect.Parameter.empty]
        if missing:
            raise _Broken(f"parameter {missing[0]!r} of __init__ has no default")
        return
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise _Broken("must be a frozen dataclass: put @dataclass(frozen=True) under the register decorator")
    for f in dataclasses.fields(cls):
        if "check" not in f.metadata:
            raise _Broken(f"field {f.name!r} is not declared with common.params.param(default, check, help)")
        if f.default is dataclasses.MISSING:
            raise _Broken(f"parameter {f.name!r} has no default")
        if kind == "masking" and f.name in RESERVED:
            raise _Broken(f"parameter {f.name!r} is also a run parameter; give it another name")


def _mask(m: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(m, np.ndarray) or m.dtype != bool or m.shape != shape:
        got = f"{m.dtype} {list(m.shape)}" if isinstance(m, np.ndarray) else type(m).__name__
        raise _Broken(f"breaks the interface: {what} must return a bool array of shape {list(shape)}, got {got}")
    return m


def _probing(fn):
    """Run a probe; an exception inside the class becomes one line."""
    def run(name: str) -> None:
        try:
            fn(name)
        except NotImplementedError as e:
            raise DipsimError(f"breaks the interface: it does not implement {e or 'a required hook'}") from None
        except _Broken:
            raise
        except DipsimError as e:     # raised by the class itself
            text = str(e)
            for kind in REGISTRIES.values():      # which names it again: once is enough
                text = text.removeprefix(f"{kind.kind} {name!r}: ").removeprefix(f"{name}: ")
            raise DipsimError(f"fails its load-time probe ({L} layers x {N} columns): {text}") from None
        except Exception as e:
            raise DipsimError(f"fails its load-time probe ({L} layers x {N} columns): {_why(e, None)}") from None
    return run


@_probing
def _probe_masking(name: str) -> None:
    cls = masking.REGISTRY[name]
    _declared(cls, "masking")
    if cls._select is masking.MaskingPolicy._select:
        raise NotImplementedError("_select(self, scores, resident, k)")
    rng = np.random.default_rng(0)
    policy = masking.make(name)
    if policy.needs_calibration:
        policy = policy.calibrate(rng.random((STEPS, L, N), dtype=np.float32), np.full(L, K))
    _mask(policy.select(rng.random((L, N), dtype=np.float32), rng.random((L, N)) < 0.5, K), (L, N), "select")
    scores = rng.random((STEPS, N), dtype=np.float32)
    if not cls.cache_aware:
        _mask(policy.select_layer(0, scores, K), (STEPS, N), "select_layer")
    else:
        got = policy.run_layer(0, scores, K, caches.make("lru", n_layers=L, n_columns=N, capacity=N // 2))
        _mask(got[0], (STEPS, N), "run_layer")


@_probing
def _probe_cache(name: str) -> None:
    cls = caches.REGISTRY[name]
    _declared(cls, "cache")
    if issubclass(cls, caches.PythonCache) and cls.evict_order is caches.PythonCache.evict_order:
        raise NotImplementedError("evict_order(self, layer, cols, t) (simulator.caches.PythonCache's hook)")
    if not issubclass(cls, caches.PythonCache) and cls._step_rows is caches.CachePolicy._step_rows:
        raise NotImplementedError("_step_rows; write a cache on simulator.caches.PythonCache (two hooks)")
    masks = np.random.default_rng(0).random((STEPS, L, N)) < 0.4
    cap = np.array([N // 3, 0])
    extra = {"future": masks} if cls.offline else {}
    a = caches.make(name, n_layers=L, n_columns=N, capacity=cap, **extra)
    hits = []
    for m in masks:
        h = _mask(a.step(m), (L, N), "step")
        if (h & ~m).any():
            raise _Broken("breaks the interface: step reported a hit on a column the step did not access")
        if (np.count_nonzero(a.resident, axis=1) > cap).any():
            raise _Broken(f"breaks the interface: a layer holds more columns than its capacity {cap.tolist()}")
        hits.append(h[0])
    b = caches.make(name, n_layers=L, n_columns=N, capacity=cap, **extra)
    if not np.array_equal(_mask(b.run_layer(0, masks[:, 0]), (STEPS, N), "run_layer"), np.array(hits)):
        raise _Broken("breaks the interface: run_layer gives other hits than step")


class _Group:
    """A matrix group as allocation sees it (``replay.setup.Group``'s fields), for the probe."""

    def __init__(self, name, n_columns, bytes_per_column):
        self.name, self.kind, self.n_columns, self.bytes_per_column = name, "x", n_columns, bytes_per_column
        self.keep, self.pruned = (0.5,) * L, True

    def k(self) -> np.ndarray:
        return np.full(L, self.n_columns // 2, dtype=np.int64)


@_probing
def _probe_allocation(name: str) -> None:
    _declared(allocation.REGISTRY[name], "allocation")
    groups = [_Group("upgate", N, 4.0), _Group("down", 2 * N, 2.0)]
    rng = np.random.default_rng(0)
    calib = {g.name: rng.random((STEPS, L, g.n_columns), dtype=np.float32) for g in groups}
    allocation.allocate(name, groups, L, 0.4 * sum(g.n_columns * g.bytes_per_column for g in groups) * L, calib=calib)


PROBES = {"masking": _probe_masking, "cache": _probe_cache, "allocation": _probe_allocation}
