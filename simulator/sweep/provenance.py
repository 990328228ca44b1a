"""What a sweep ran on, for its report and for whoever reads its results later: the command, dipsim's
version, the experiment file, the plugins (with their source hashes) and the digests of the traces,
models and hardware profiles its points used. Written as ``OUT/provenance.json`` at the end of every
sweep (``write``); a search writes its own beside its trials (``collect`` takes any point
configurations); ``dipsim report`` shows it.

Digests: a trace file's SHA-256 over all its bytes; a model's file key (``traces.models.file_key``:
SHA-256 of its size and first and last 4 MiB, the key of the dequantized-model cache); a device
profile's SHA-256 of its YAML file and of each part file it names.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from common.io import atomic_write

from .. import plugins
from ..config import TraceSpec
from .execute import trace_path

_SHA: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and modification time in this process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


def _trace(path: Path) -> dict[str, Any]:
    from traces.format import load

    try:
        meta = load(path, check_finite=False).meta
    except Exception as e:    # a provenance entry must not stop a finished sweep
        return {"error": f"{type(e).__name__}: {e}"}
    keep = ("model", "n_tokens", "corpus", "corpus_digest", "prefix_token", "weight_dtype", "dipsim_version")
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size, **{k: meta[k] for k in keep if k in meta}}


def _model(name: str) -> dict[str, Any]:
    if name.startswith("synth:"):
        return {"kind": "synthetic trace (no model file)"}
    from traces.models import file_key, resolve

    try:
        src = resolve(name)
    except Exception as e:
        return {"error": " ".join(str(e).split())[:200]}
    p = Path(src.path)
    return {"path": str(p), "file_key": file_key(p) if p.is_file() else "a model directory"}


def _profile(device: str) -> dict[str, Any]:
    from ..hardware import load_device

    try:
        dev = load_device(device)
    except Exception as e:
        return {"error": " ".join(str(e).split())[:200]}
    files = dict.fromkeys([dev.path] + [getattr(part, "path", "") for part in (dev.flash, dev.dram, dev.compute)
                                       if part is not None])
    return {"name": dev.name, "files": {f: sha256_file(f) for f in files if f and Path(f).is_file()}}


def collect(configs, *, name: str, source: str | Path | None = None, command: str | None = None) -> dict[str, Any]:
    """The provenance of a run of the point configurations ``configs`` (``config.PointConfig``; their
    traces must exist: call it after the run): ``name`` and ``source``, the experiment (or search)
    file it came from."""
    from traces import __version__

    configs = list(configs)
    traces, models, profiles = {}, {}, {}
    for cfg in configs:
        path = trace_path(cfg.trace)
        if str(path) not in traces and path.exists():
            traces[str(path)] = _trace(path)
        model = cfg.trace.model if isinstance(cfg.trace, TraceSpec) else None
        model = model or (traces.get(str(path)) or {}).get("model")
        if model and model not in models:
            models[model] = _model(str(model))
        if cfg.device is not None and cfg.device not in profiles:
            profiles[cfg.device] = _profile(cfg.device)
    src = Path(source) if source is not None else None
    return {
        "command": command or f"(Python: {shlex.join(sys.argv)})",
        "dipsim_version": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "experiment": {"name": name, "path": str(src) if src else "–", "points": len(configs),
                       "sha256": sha256_file(src) if src and src.is_file() else "–",
                       "yaml": src.read_text(errors="replace") if src and src.is_file() else ""},
        "plugins": [{"spec": p.spec, "origin": p.origin, "source_sha256_16": p.digest,
                     "names": [f"{k}:{n}" for k, n in p.names]} for p in plugins.plugins()],
        "traces": traces, "models": models, "profiles": profiles,
    }


def write(out: Path, exp, command: str | None = None) -> dict[str, Any]:
    """``out/provenance.json`` of a sweep of experiment ``exp``."""
    prov = collect([p.config for p in exp.points], name=exp.name, source=exp.path, command=command)
    atomic_write(out / "provenance.json", json.dumps(prov, indent=1, default=str).encode())
    return prov
