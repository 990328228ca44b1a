"""The on-disk store of closed-loop results: one JSON file per (model, corpus, run options,
configuration) under ``common.io.cache_root() / "accuracy"``, written atomically, so that sweeps
and reruns reuse every configuration already measured. A configuration naming a plugin's class has
the SHA-256 of the plugin's source in its key (``plugins.source_key``): an edited plugin measures anew.
"""
from __future__ import annotations

from common.errors import DipsimError
from common.io import atomic_write, cache_root

from .. import plugins

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

#: bump when a change alters the figures stored results hold (2: the layer-wise loop; 3: the prefix-token
#: convention -- the model's own by default, position 0 always dense -- with the resolved prefix in the key)
SCHEMA = 3


def results_dir() -> Path:
    return cache_root() / "accuracy"


def model_key(source) -> str:
    """The accuracy store's key of a model's files (``traces.identity.model_key``)."""
    from traces.identity import model_key as key

    return key(source)


def result_key(model_key: str, corpus_digest: str, run: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    from traces import __version__

    c = {k: v for k, v in cfg.items() if k != "label"}
    source = plugins.source_key(c)      # a plugin's classes: the source hash of its module
    return {"schema": SCHEMA, "dipsim": __version__, "model": model_key, "corpus_digest": corpus_digest, **run,
            "config": c, **({"plugins": source} if source else {})}


def lookup(source, digest: str, run: dict[str, Any], cfgs: list[dict[str, Any]], reuse: bool
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
    """The store keys of configurations ``cfgs`` run with ``run`` on the model ``source`` and the data
    of ``digest``, and their stored results where ``reuse`` and the store has them (else None)."""
    keys = [result_key(model_key(source), digest, run, c) for c in cfgs]
    results: list[dict[str, Any] | None] = [None] * len(cfgs)
    if reuse:
        for i, k in enumerate(keys):
            hit = read_cached(k)
            if hit is not None:
                results[i] = {**hit, "label": cfgs[i]["label"], "config": cfgs[i], "from_cache": True}
    return keys, results


def _key_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return results_dir() / f"{digest}.json"


def read_cached(key: dict[str, Any]) -> dict[str, Any] | None:
    p = _key_path(key)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != json.loads(json.dumps(key)):
        return None
    return data.get("result")


def write_cached(key: dict[str, Any], result: dict[str, Any]) -> None:
    p = _key_path(key)
    try:   # atomic_write makes the folder, and reports a failed write as a DipsimError
        atomic_write(p, json.dumps({"key": key, "result": result}, indent=1, sort_keys=True).encode(), sync=False)
    except (OSError, DipsimError) as e:  # a cache that cannot be written only costs time
        print(f"dipsim: warning: could not cache an accuracy result in {p.parent}: {e}", file=sys.stderr)
