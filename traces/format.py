"""The trace file: activations of every gated MLP of a model, per layer and token.

A trace is a safetensors file (https://github.com/huggingface/safetensors) holding, for every
layer ``l``:

* ``x.l`` -- ``[n_tokens, d_model]``: the MLP input, what W_up and W_gate see (after the norm);
* ``h.l`` -- ``[n_tokens, d_ff]``: ``act(W_gate x) * (W_up x)``, what W_down sees (optional).

The ``__metadata__`` entry ``dipsim`` holds a JSON object with the model name, architecture,
activation, dimensions, the source weight dtype and bytes per weight, the token count, the corpus
digest and the dipsim version (see ``REQUIRED_META``).

Files are written by :class:`TraceWriter` in token chunks (bounded memory on long captures) into a
temporary file that is renamed into place only when complete, so a reader never sees a partial
trace. :func:`load` memory-maps the tensors after checking the header, shapes, dtypes, sizes and
(by default) finiteness, and names the file and the problem in one line when anything is off.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._fast import abs_to_f32
from ._version import __version__
from common.errors import DipsimError

# Metadata every trace carries, with the Python type each value must have.
REQUIRED_META: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "architecture": str,
    "activation": str,
    "n_layers": int,
    "d_model": int,
    "d_ff": int,
    "weight_dtype": str,
    "bytes_per_weight": (int, float),
    "n_tokens": int,
    "corpus_digest": str,
    "dipsim_version": str,
    "has_h": bool,
}

#: upper bounds of the size fields (required ones and, when present, the optional ones): far above any
#: real model, low enough that a corrupt header cannot make the loader loop or allocate without end
SIZE_LIMITS = {"n_layers": 4096, "d_model": 1 << 17, "d_ff": 1 << 20, "n_tokens": 1 << 26, "n_heads": 4096,
               "n_kv_heads": 4096, "head_dim": 1 << 14, "vocab_size": 1 << 24, "context": 1 << 26,
               "attn_params_per_layer": 1 << 40, "embed_params": 1 << 40, "lm_head_params": 1 << 40}

_DTYPES = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4")}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _tensor_names(n_layers: int, has_h: bool) -> list[str]:
    names = []
    for layer in range(n_layers):
        names.append(f"x.{layer}")
        if has_h:
            names.append(f"h.{layer}")
    return names


def _meta_int(key: str) -> property:
    """A read-only attribute: the metadata entry ``key`` as an int."""
    return property(lambda self: int(self.meta[key]), doc=f"the trace's {key} (from its metadata)")


@dataclass
class Trace:
    """Activations of one model over one corpus, memory-mapped from a trace file.

    ``x(layer)`` is ``[n_tokens, d_model]`` and ``h(layer)`` is ``[n_tokens, d_ff]``, both in the
    file's dtype (float16 by default) and read-only.
    """

    meta: dict[str, Any]
    _x: list[np.ndarray]
    _h: list[np.ndarray] | None
    path: Path | None = None

    n_layers = _meta_int("n_layers")
    d_model = _meta_int("d_model")
    d_ff = _meta_int("d_ff")
    n_tokens = _meta_int("n_tokens")

    @property
    def has_h(self) -> bool:
        return self._h is not None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"<in-memory trace of {self.meta.get('model')}>"

    def x(self, layer: int) -> np.ndarray:
        """MLP input of ``layer``: ``[n_tokens, d_model]``."""
        return self._x[self._check_layer(layer)]

    def h(self, layer: int) -> np.ndarray:
        """GLU output of ``layer`` (the input of W_down): ``[n_tokens, d_ff]``."""
        if self._h is None:
            raise DipsimError(f"{self.name}: the trace holds no h (GLU output); capture it again without --no-h")
        return self._h[self._check_layer(layer)]

    def _check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise DipsimError(f"{self.name}: layer {layer} out of range 0..{self.n_layers - 1}")
        return layer

    def abs_block(self, kind: str, t0: int, t1: int) -> np.ndarray:
        """``|x|`` or ``|h|`` of tokens ``t0:t1`` for all layers at once, float32 ``[t1-t0, L, N]``
        (a view of a layer-major block: ``block[t]`` is a strided ``[L, N]`` array)."""
        get = self.x if kind == "x" else self.h
        n = self.d_model if kind == "x" else self.d_ff
        out = np.empty((self.n_layers, t1 - t0, n), dtype=np.float32)
        for layer in range(self.n_layers):
            abs_to_f32(get(layer)[t0:t1], out[layer])
        return out.transpose(1, 0, 2)

    def abs_layer(self, kind: str, layer: int, t0: int, t1: int) -> np.ndarray:
        """``|x|`` or ``|h|`` of one layer for tokens ``t0:t1``, float32 ``[t1-t0, N]`` (contiguous)."""
        src = (self.x if kind == "x" else self.h)(layer)[t0:t1]
        out = np.empty(src.shape, dtype=np.float32)
        abs_to_f32(src, out)
        return out

    def summary(self) -> dict[str, Any]:
        keys = ("model", "architecture", "activation", "n_layers", "d_model", "d_ff", "n_tokens",
                "weight_dtype", "bytes_per_weight", "corpus", "corpus_digest", "context", "prefix_token",
                "first_text_token", "dipsim_version")
        return {k: self.meta[k] for k in keys if k in self.meta}

    @classmethod
    def from_arrays(cls, xs: np.ndarray, hs: np.ndarray | None, meta: dict[str, Any] | None = None) -> "Trace":
        """An in-memory trace from ``xs [L, T, d_model]`` and ``hs [L, T, d_ff]`` (tests, synthetic data)."""
        xs = np.asarray(xs)
        L, T, dm = xs.shape
        full = {
            "model": "in-memory", "architecture": "synthetic", "activation": "silu",
            "n_layers": L, "d_model": dm, "d_ff": int(hs.shape[2]) if hs is not None else 4 * dm,
            "weight_dtype": "F16", "bytes_per_weight": 2.0, "n_tokens": T, "corpus_digest": "",
            "dipsim_version": __version__, "has_h": hs is not None,
        }
        full.update(meta or {})
        full.update({"n_layers": L, "d_model": dm, "n_tokens": T, "has_h": hs is not None})
        if hs is not None:
            hs = np.asarray(hs)
            if hs.shape[:2] != (L, T):
                raise DipsimError(f"h has shape {list(hs.shape)}, expected [{L}, {T}, d_ff]")
            full["d_ff"] = int(hs.shape[2])
        return cls(full, list(xs), list(hs) if hs is not None else None)


def load(path: str | os.PathLike, *, check_finite: bool = True) -> Trace:
    """Open a trace file, check it, and memory-map its tensors.

    Raises :class:`DipsimError` with a one-line message naming the file and the problem for a
    missing, truncated or corrupt file, wrong shapes or dtypes, missing metadata, or NaN/inf.
    """
    p = Path(path)
    if not p.exists():
        raise DipsimError(f"trace file not found: {p}")
    if p.is_dir():
        raise DipsimError(f"{p}: is a directory, not a trace file")
    if not p.is_file():
        raise DipsimError(f"{p}: not a regular file (a pipe or a device cannot be a trace)")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DipsimError(f"{p}: not a trace file (only {size} bytes; a safetensors header needs 8)")
        (hlen,) = struct.unpack("<Q", head)
        if hlen == 0 or hlen > _MAX_HEADER or 8 + hlen > size:
            raise DipsimError(f"{p}: not a trace file or truncated (header length {hlen}, file size {size})")
        raw = f.read(hlen)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DipsimError(f"{p}: corrupt header ({e.__class__.__name__}: {e})") from None
    if not isinstance(header, dict):
        raise DipsimError(f"{p}: corrupt header (not a JSON object)")
    meta_raw = (header.get("__metadata__") or {}).get("dipsim")
    if meta_raw is None:
        raise DipsimError(f"{p}: not a dipsim trace (safetensors metadata has no 'dipsim' entry)")
    try:
        meta = json.loads(meta_raw)
    except json.JSONDecodeError as e:
        raise DipsimError(f"{p}: corrupt dipsim metadata ({e})") from None
    _check_meta(p, meta)
    L, T, dm, dff, has_h = meta["n_layers"], meta["n_tokens"], meta["d_model"], meta["d_ff"], meta["has_h"]
    data_start = 8 + hlen
    data_size = size - data_start
    arrays: dict[str, np.ndarray] = {}
    spans: list[tuple[int, int, str]] = []
    expected = _tensor_names(L, has_h)
    extra = sorted(set(header) - set(expected) - {"__metadata__"})
    if extra:
        raise DipsimError(f"{p}: unexpected tensor '{extra[0]}' (a trace holds x.0..x.{L - 1}"
                          f"{' and h.0..h.' + str(L - 1) if has_h else ''})")
    for name in expected:
        info = header.get(name)
        if not isinstance(info, dict):
            raise DipsimError(f"{p}: tensor '{name}' missing (metadata says {L} layers, has_h={has_h})")
        width = dm if name.startswith("x.") else dff
        dt = _DTYPES.get(info.get("dtype"))
        if dt is None:
            raise DipsimError(f"{p}: tensor '{name}' has dtype {info.get('dtype')!r}; allowed: F16, F32")
        shape = info.get("shape")
        if shape != [T, width]:
            raise DipsimError(f"{p}: tensor '{name}' has shape {shape}, expected [{T}, {width}] (n_tokens, "
                              f"{'d_model' if name.startswith('x.') else 'd_ff'})")
        try:
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DipsimError(f"{p}: tensor '{name}' has no valid data_offsets") from None
        if end - begin != T * width * dt.itemsize or begin < 0:
            raise DipsimError(f"{p}: tensor '{name}' data_offsets {begin}..{end} do not match its shape")
        if end > data_size:
            raise DipsimError(f"{p}: truncated: tensor '{name}' needs bytes up to {data_start + end}, "
                              f"the file has {size}")
        arrays[name] = np.memmap(p, dtype=dt, mode="r", offset=data_start + begin, shape=(T, width))
        spans.append((begin, end, name))
    spans.sort()
    for (_, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise DipsimError(f"{p}: tensors '{n0}' and '{n1}' overlap in the file (corrupt data_offsets)")
    if check_finite:
        for name, arr in arrays.items():
            _check_finite(p, name, arr)
    xs = [arrays[f"x.{layer}"] for layer in range(L)]
    hs = [arrays[f"h.{layer}"] for layer in range(L)] if has_h else None
    return Trace(meta, xs, hs, path=p)


def _check_meta(p: Path, meta: Any) -> None:
    if not isinstance(meta, dict):
        raise DipsimError(f"{p}: corrupt dipsim metadata (not a JSON object)")
    for key, typ in REQUIRED_META.items():
        if key not in meta:
            raise DipsimError(f"{p}: metadata field '{key}' missing")
        value = meta[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            raise DipsimError(f"{p}: metadata field '{key}' is {value!r}, expected {_typename(typ)}")
    for key, hi in SIZE_LIMITS.items():
        v = meta.get(key)
        if key not in REQUIRED_META and v is None:
            continue
        lo = 0 if key in ("attn_params_per_layer", "lm_head_params") else 1
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise DipsimError(f"{p}: metadata field '{key}' is {v!r}, expected a whole number in {lo}..{hi}")
    for key in ("bytes_per_weight", "static_bytes_per_weight"):
        v = meta.get(key)
        if key not in REQUIRED_META and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 8:
            raise DipsimError(f"{p}: metadata field '{key}' is {v!r}, expected bytes per weight in (0, 8]")
    if meta.get("n_kv_heads") and meta.get("n_heads") and meta["n_kv_heads"] > meta["n_heads"]:
        raise DipsimError(f"{p}: metadata says {meta['n_kv_heads']} KV heads for {meta['n_heads']} attention heads")
    if meta.get("tied_lm_head") is not None and not isinstance(meta["tied_lm_head"], bool):
        raise DipsimError(f"{p}: metadata field 'tied_lm_head' is {meta['tied_lm_head']!r}, expected true or false")


def _typename(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _check_finite(p: Path, name: str, arr: np.ndarray, chunk: int = 4096) -> None:
    for t0 in range(0, arr.shape[0], chunk):
        block = arr[t0:t0 + chunk]
        finite = np.isfinite(block)
        if not finite.all():
            bad = np.argwhere(~finite)
            n_bad = int((~finite).sum())
            tok, col = (int(v) for v in bad[0])
            raise DipsimError(f"{p}: tensor '{name}' holds NaN/inf ({n_bad}+ values; first at token "
                              f"{t0 + tok}, column {col})")
