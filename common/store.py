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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.errors import DipsimError

KINDS = ("variant", "adapter", "predictor")


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
    check_meta(meta, p)         # a file the readers would refuse is a bug of its writer
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


def _id(v: Any, where: str) -> str:
    if not isinstance(v, str) or len(v) < 8 or any(c not in "0123456789abcdef" for c in v):
        raise DipsimError(f"{where}: expected the file's content id (hex digits), got {v!r}")
    return v


def _names(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise DipsimError(f"{where}: expected a non-empty list of names, got {v!r}")
    return v


def _per_weight(v: Any, where: str) -> dict[str, float]:
    from .params import number

    if not isinstance(v, dict) or "bitmask_per_weight" not in v:
        raise DipsimError(f"{where}: expected the stored bytes per weight of each format "
                          f"(bitmask_per_weight, ...), got {v!r}")
    return {k: number(0, 64, lo_open=True)(x, f"{where}.{k}") for k, x in v.items() if k.endswith("_per_weight")}


def _matrices(v: Any, where: str) -> dict[str, Any]:
    from .params import number

    if not isinstance(v, dict):
        raise DipsimError(f"{where}: expected a mapping of matrix name -> {{shape, nnz}}, got {v!r}")
    for name, info in v.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise DipsimError(f"{where}.{name}: expected {{shape: [rows, columns], nnz}}, got {info!r}")
        number(0, shape[0] * shape[1], integer=True)(info.get("nnz"), f"{where}.{name}.nnz")
    return v


def _heads(v: Any, where: str) -> list[str]:
    if not set(_names(v, where)) <= {"down", "upgate"}:
        raise DipsimError(f"{where}: expected down and/or upgate, got {v!r}")
    return v


def schema(kind: str) -> dict[str, tuple[Any, bool]]:
    """The metadata of a method file of ``kind``: field -> (its check, required). The checks are
    ``common.params``'s; an optional field is checked when present. Every reader of a method file
    relies on these fields and nothing else."""
    from .params import name_in, number, text

    whole = number(1, None, integer=True)
    common = {"kind": (name_in("method file kind", lambda: KINDS), True), "id": (_id, True),
              "model": (text(optional=False), True), "n_layers": (whole, True), "d_model": (whole, True),
              "d_ff": (whole, True)}
    return {
        "variant": {**common, "bytes": (_per_weight, True), "sparsity": (number(0, 1), False),
                    "method": (text(optional=False), False), "matrices": (_matrices, False)},
        "adapter": {**common, "rank": (number(1, 1 << 20, integer=True), True),
                    "alpha": (number(0, None, lo_open=True), True), "fp16_bytes": (number(0, 1e15), True),
                    "params": (number(0, None, integer=True), False), "targets": (_names, True)},
        "predictor": {**common, "heads": (_heads, True), "rank": (number(1, 1 << 20, integer=True), False)},
    }[kind]


def check_meta(meta: Any, p: Path, kind: str | None = None) -> dict[str, Any]:
    """``meta`` checked against the declared :func:`schema` of its kind: one-line errors naming the
    file and the field."""
    if not isinstance(meta, dict):
        raise DipsimError(f"{p}: the method file's metadata is not a JSON object")
    if meta.get("kind") not in KINDS:
        raise DipsimError(f"{p}: metadata kind: expected one of {', '.join(KINDS)}, got {meta.get('kind')!r}")
    if kind is not None and meta["kind"] != kind:
        raise DipsimError(f"{p}: a {meta['kind']!r} file, expected a {kind!r} file")
    for key, (check, required) in schema(meta["kind"]).items():
        where = f"{p}: metadata {key}"
        if key in meta:
            check(meta[key], where)
        elif required:
            raise DipsimError(f"{where}: missing (the file was not written by dipsim's methods, or is damaged)")
    return meta


def read_meta(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The metadata object of a method file (header only), checked to be of ``kind`` and against the
    declared schema of its kind; one-line errors."""
    from .stheader import check_spans, metadata_json, read_header

    h = read_header(path, f"{kind or 'method'} file")
    meta = check_meta(metadata_json(h, "dipsim_method", "dipsim method file"), h.path, kind)
    _check_tensors(h.path, meta, {name: shape for name, (_, shape, _, _) in check_spans(h).items()})
    return meta


def _check_tensors(p: Path, meta: dict[str, Any], shapes: dict[str, list[int]]) -> None:
    """The tensors a file of its kind must hold, by name and shape, from the header alone."""
    def need(name: str, shape: list, what: str) -> None:
        have = shapes.get(name)
        if have is None or len(have) != len(shape) or any(s is not None and s != d for s, d in zip(shape, have)):
            raise DipsimError(f"{p}: {meta['kind']} tensor {name!r} is {'missing' if have is None else have}, "
                              f"expected {[s if s is not None else 'r' for s in shape]} ({what})")

    for name, info in (meta.get("matrices") or {}).items() if meta["kind"] == "variant" else ():
        need(f"{name}.values", [None], "the kept values")
        need(f"{name}.mask", [-(-info["shape"][0] * info["shape"][1] // 8)], "a bit per weight")
    if meta["kind"] == "adapter" and not any(n.endswith(".lora_A") for n in shapes):
        raise DipsimError(f"{p}: an adapter file without LoRA tensors (*.lora_A, *.lora_B)")
    if meta["kind"] == "predictor":
        L, dm, dff = meta["n_layers"], meta["d_model"], meta["d_ff"]
        need("mu", [L, dm], "n_layers, d_model")
        need("sd", [L, dm], "n_layers, d_model")
        for head in meta["heads"]:
            n_out = dff if head == "down" else dm
            for layer in range(L):
                rank = (shapes.get(f"{head}.{layer}.w1") or [None])[0]
                need(f"{head}.{layer}.w1", [rank, dm], "rank, d_model")
                need(f"{head}.{layer}.b1", [rank], "rank")
                need(f"{head}.{layer}.w2", [n_out, rank], f"{'d_ff' if head == 'down' else 'd_model'}, rank")
                need(f"{head}.{layer}.b2", [n_out], "outputs")


def check_made_for(meta: dict[str, Any], have: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a method file made for another model: each of model, n_layers, d_model, d_ff that
    ``have`` knows must match the file's."""
    for k in ("model", "n_layers", "d_model", "d_ff"):
        if k in have and meta.get(k) != have[k]:
            raise DipsimError(f"{path}: made for {k} = {meta.get(k)!r}, this model has {have[k]!r}")


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
    check_made_for(meta, model_meta(lm), path)


def model_meta(lm) -> dict[str, Any]:
    info = lm.info
    return {"model": info.model, "n_layers": info.n_layers, "d_model": info.d_model, "d_ff": info.d_ff,
            "bytes_per_weight": info.bytes_per_weight, "weight_dtype": info.weight_dtype}
