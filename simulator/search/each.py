"""One search per variant: ``search.each`` and ``traces:`` split a search into studies of their own.

    traces: [{model: smollm2-135m, tokens: 512}, {model: qwen2.5-0.5b, tokens: 512}]
    base: {cache: lru, dram_fraction: 0.5, accuracy: true}
    search:
      each:                               # point keys: one study per combination, the last key drawn as fronts
        device: [paper-a18, phone-12gb-ufs40]
        masking: [dense, dip, dip-ca, {masking: powerinfer, cache: pinned, oracle: true}]
      space: {keep: {low: 0.3, high: 1.0}, gamma: {low: 0.0, high: 1.0}}
      share: [device]                     # optional: studies that differ only in these keys measure the
                                          # designs the first of them searched (its closed loops are reused)
      trials: 12                          # per study; a study whose space is empty (dense) runs one

A value of ``each`` is a point value, or a mapping that holds the key itself and further point keys set
with it (powerinfer with its pinned cache). Each variant is a whole search (``build_search``) on one
trace, its base with the variant's values set, searching only the dimensions of the space that apply to
it (gamma for dip-ca, no keep for dense); a dimension no variant takes is refused. Variants are listed
trace first, then in the order of ``each``; each lives in ``OUT/<trace>/<value>/.../``.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import DipsimError

from ..sweep.experiment import flatten
from .space import Search, read_section, applies, build_search


@dataclass
class Variant:
    """One study of a split search: its labels (``trace``, then the keys of ``each``), its search and
    ``shares`` (the labels of the keys of ``share`` left out: studies with the same measure one set of
    designs, the first one's)."""

    search: Search
    labels: dict[str, str] = field(default_factory=dict)
    shares: tuple = ()

    @property
    def folder(self) -> Path:
        return Path(*self.labels.values()) if self.labels else Path()

    @property
    def name(self) -> str:
        return " / ".join(self.labels.values())


def trace_label(trace: Any) -> str:
    """A folder name for a trace: ``model-tokens`` for a captured {model, tokens} trace, else its stem."""
    if isinstance(trace, dict):
        text = f"{trace.get('model')}-{trace['tokens']}" if "tokens" in trace else str(trace.get("model"))
    else:
        text = Path(str(trace)).name.split(".safetensors")[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "trace"


def load_searches(path: str | Path) -> list[Variant]:
    """The searches of an experiment file: one (no labels) without ``search.each``, else one per trace
    and combination of ``each``'s values, every one checked before any work."""
    exp, raw = read_section(path)
    if "each" not in raw:
        from .space import load_search

        return [Variant(load_search(path))]
    p = exp.path
    each = _each(p, raw["each"])
    traces = exp.raw.get("traces")
    traces = traces if isinstance(traces, list) else [exp.raw.get("trace", (exp.raw.get("base") or {}).get("trace"))]
    space = raw.get("space") or {}
    searched = set(space) if isinstance(space, dict) else set()
    used: set[str] = set()

    def takes(name: str, base: dict[str, Any]) -> bool:
        ok = applies(name, flatten(base), searched)
        used.update([name] if ok else [])
        return ok

    share = _share(p, raw.get("share"), each)
    section = {k: v for k, v in raw.items() if k not in ("each", "share")}
    out = []
    for trace in traces:
        for combo in itertools.product(*each.values()):
            fixed: dict[str, Any] = {}
            labels = {"trace": trace_label(trace)} if len(traces) > 1 else {}
            for key, v in zip(each, combo):
                fixed.update(v if isinstance(v, dict) else {key: v})
                labels[key] = re.sub(r"[^A-Za-z0-9._-]+", "_", str(v[key] if isinstance(v, dict) else v))
            shares = tuple((k, x) for k, x in labels.items() if k not in share) if share else ()
            out.append(Variant(build_search(exp, section, trace, fixed, takes), labels, shares))
    idle = [k for k in searched if k not in used]
    if idle:
        raise DipsimError(f"{p}: search.space.{idle[0]}: no variant of search.each takes it")
    names = [v.name for v in out]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise DipsimError(f"{p}: search.each: two variants are both named {twice!r}; their values must differ")
    return out


def _each(p: Path, raw: Any) -> dict[str, list]:
    from ..config import point_keys

    where = f"{p}: search.each"
    if not isinstance(raw, dict) or not raw:
        raise DipsimError(f"{where}: expected a mapping of point keys to lists of values, e.g. "
                          f"{{device: [paper-a18, phone-12gb-ufs40], masking: [dense, dip]}}")
    keys = point_keys()
    for k, v in raw.items():
        if k == "trace":
            raise DipsimError(f"{where}.trace: list the traces under 'traces:' instead; each is searched apart")
        if not isinstance(k, str) or k not in keys or k == "accuracy":
            raise DipsimError(f"{where}: unknown key {k!r}; allowed: point keys "
                              f"({', '.join(x for x in keys if x not in ('trace', 'accuracy'))})")
        if not isinstance(v, list) or not v:
            raise DipsimError(f"{where}.{k}: expected a non-empty list of values")
        for x in v:
            if isinstance(x, dict) and k not in x:
                raise DipsimError(f"{where}.{k}: a mapping value must hold {k!r} itself (it names the variant), "
                                  f"got {x!r}")
    return raw


def _share(p: Path, raw: Any, each: dict[str, list]) -> list[str]:
    if raw is None:
        return []
    keys = list(each)[:-1]
    if not isinstance(raw, list) or not raw or any(k not in keys for k in raw):
        raise DipsimError(f"{p}: search.share: expected a list of keys of search.each other than its last "
                          f"({', '.join(keys) or 'none here'}), got {raw!r}")
    return raw
