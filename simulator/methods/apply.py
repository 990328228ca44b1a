"""A configuration's model changes, for the accuracy loop: ``variant`` (pruned weights, ``variants``)
and ``adapter`` (a LoRA adapter, ``lora``), both file paths. ``check`` validates them without torch
(``accuracy.configs.normalize_config`` calls it); ``applied`` puts them into the model for one
configuration's forward and restores the base weights afterwards (bit for bit). A variant is applied
first, then the adapter is merged onto it.
"""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from common import store

#: configuration keys naming method files, and the file kind each names
FILE_KEYS = {"variant": "variant", "adapter": "adapter"}


def check(cfg: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``{key: absolute path, key_id: file id}`` for the method files ``cfg`` names (nothing for a key it
    does not name, so other configurations and their stored results are unchanged); a given
    ``<key>_id`` must match the file (it changed otherwise). One-line errors."""
    from common.errors import DipsimError

    out: dict[str, Any] = {}
    for key, kind in FILE_KEYS.items():
        path, want = cfg.get(key), cfg.get(f"{key}_id")
        if path is None:
            if want is not None:
                raise DipsimError(f"{where}: {key}_id given without {key}")
            continue
        if not isinstance(path, (str, os.PathLike)):
            raise DipsimError(f"{where}: {key} must be the path of a {kind} file, got {path!r}")
        try:
            meta = store.read_meta(path, kind)
        except DipsimError as e:
            raise DipsimError(f"{where}: {key}: {e}") from None
        if want is not None and want != meta["id"]:
            raise DipsimError(f"{where}: {key} {path} has id {meta['id']}, the configuration names {want} "
                              f"(the file changed)")
        out[key], out[f"{key}_id"] = str(Path(path).resolve()), meta["id"]
    return out


def label_suffix(cfg: dict[str, Any]) -> str:
    """`` +sparsegpt0.5`` / `` +lora-r16`` for a configuration's label."""
    parts = []
    if cfg.get("variant"):
        m = store.read_meta(cfg["variant"], "variant")
        parts.append(f"+{m.get('method')}{m.get('sparsity')}")
    if cfg.get("adapter"):
        m = store.read_meta(cfg["adapter"], "adapter")
        parts.append(f"+lora-r{m.get('rank')}")
    return (" " + " ".join(parts)) if parts else ""


@contextmanager
def applied(lm, cfg: dict[str, Any]) -> Iterator[None]:
    """The configuration's variant and adapter in ``lm`` while the block runs."""
    if not (cfg.get("variant") or cfg.get("adapter")):
        yield
        return
    from .lora import load_adapter
    from .variants import load_variant

    with ExitStack() as stack:
        if cfg.get("variant"):
            v = load_variant(cfg["variant"])
            stack.enter_context(v.apply(lm))
        if cfg.get("adapter"):
            stack.enter_context(load_adapter(cfg["adapter"]).apply(lm))
        yield
