"""Files of the methods: safetensors tensors + one JSON metadata object in the safetensors header.

Every file (a pruned-weight variant, a LoRA adapter, a predictor) carries ``__metadata__["dipsim_method"]``:
a JSON object with at least ``kind`` (``variant``, ``adapter``, ``predictor``), ``model`` and ``id`` -- a
SHA-256 prefix of the tensors as written, so that a configuration naming the file can put the id in
its result key and a changed file is never mistaken for the measured one. :func:`read_meta` reads the
header alone (no torch, no tensor data), so configurations are checked without loading anything.
Files are written atomically (``common.io.atomic``).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.errors import DipsimError

KINDS = ("variant", "adapter", "predictor")
_MAX_HEADER = 100 << 20


def tensors_id(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` (numpy arrays) and ``meta`` (JSON-able; ``kind`` required) to ``path``; the
    returned metadata id is also put into ``meta['id']``."""
    from safetensors.numpy import save_file

    from common.io import atomic, check_file

    if meta.get("kind") not in KINDS:
        raise DipsimError(f"method file kind must be one of {', '.join(KINDS)}, got {meta.get('kind')!r}")
    p = check_file(path, "method file", (".safetensors",))
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta["id"] = tensors_id(tensors)
    with atomic(p) as tmp:
        save_file(tensors, str(tmp), metadata={"dipsim_method": json.dumps(meta, sort_keys=True)})
    return p


def save_owned(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict[str, Any], **fields: Any) -> Path:
    """Save an in-memory method object: its ``meta`` (less the ``id`` and ``path`` of an earlier file)
    with ``fields`` added; ``meta`` then records the new file's ``id`` and ``path``."""
    out = {k: v for k, v in meta.items() if k not in ("id", "path")}
    out.update(fields)
    p = save(path, tensors, out)
    meta.update(id=out["id"], path=str(p))
    return p


@dataclass(kw_only=True)
class MethodObject:
    """What every in-memory method object (a variant, an adapter, a predictor) shares: its file's
    metadata ``meta`` and how it is saved. A subclass names its ``KIND`` and gives its tensors
    (``file_tensors``) and any further metadata (``file_fields``)."""

    meta: dict[str, Any] = field(default_factory=dict)
    KIND: ClassVar[str] = ""

    def file_tensors(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def file_fields(self) -> dict[str, Any]:
        return {}

    def save(self, path: str | os.PathLike) -> Path:
        return save_owned(path, self.file_tensors(), self.meta, kind=self.KIND, **self.file_fields())

    def tagged(self, name: str) -> str:
        """``name-<file id>`` (``unsaved`` before a save): how results name what was applied."""
        return f"{name}-{self.meta.get('id', 'unsaved')}"


def read_meta(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The metadata object of a method file (header only), checked to be of ``kind``; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise DipsimError(f"{kind or 'method'} file not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
        hlen = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 0 < hlen <= _MAX_HEADER:
            raise DipsimError(f"{p}: not a safetensors file")
        raw = f.read(hlen)
    try:
        meta = json.loads(json.loads(raw)["__metadata__"]["dipsim_method"])
    except (ValueError, KeyError, TypeError):
        raise DipsimError(f"{p}: not a dipsim method file (no 'dipsim_method' metadata)") from None
    if kind is not None and meta.get("kind") != kind:
        raise DipsimError(f"{p}: a {meta.get('kind')!r} file, expected a {kind!r} file")
    return meta


def load(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, meta)`` of a method file of ``kind``."""
    from safetensors.numpy import load_file

    meta = read_meta(path, kind)
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
        raise DipsimError(f"{path}: cannot read the tensors ({str(e).splitlines()[0]})") from None
    return tensors, meta


def check_model(meta: dict[str, Any], lm, path: str | os.PathLike) -> None:
    """Refuse a file made for another model (name and dimensions)."""
    have = model_meta(lm)
    for k in ("model", "n_layers", "d_model", "d_ff"):
        v = have[k]
        if meta.get(k) != v:
            raise DipsimError(f"{path}: made for {k} = {meta.get(k)!r}, this model has {v!r}")


def model_meta(lm) -> dict[str, Any]:
    info = lm.info
    return {"model": info.model, "n_layers": info.n_layers, "d_model": info.d_model, "d_ff": info.d_ff,
            "bytes_per_weight": info.bytes_per_weight, "weight_dtype": info.weight_dtype}
