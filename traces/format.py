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
from typing import Any, Iterable

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

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    @property
    def d_ff(self) -> int:
        return int(self.meta["d_ff"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

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
                "weight_dtype", "bytes_per_weight", "corpus", "corpus_digest", "context", "dipsim_version")
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


class TraceWriter:
    """Writes a trace in token chunks; the file appears at ``path`` only on :meth:`commit`.

    ``write(t0, xs, hs)`` stores rows ``t0 : t0 + n`` of every layer (``xs [L, n, d_model]``,
    ``hs [L, n, d_ff]``). ``commit(n_done)`` finishes the file; when fewer tokens than planned were
    written (an interrupted capture), the file is rewritten with exactly ``n_done`` tokens, so what
    was captured is kept and the file stays valid. Used as a context manager, an exception before
    commit removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], *, n_layers: int, d_model: int,
                 d_ff: int, n_tokens: int, dtype: str = "float16", with_h: bool = True):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype not in _DTYPE_NAMES:
            raise DipsimError(f"trace dtype {dtype!r} not supported; allowed: float16, float32")
        self.n_layers, self.d_model, self.d_ff, self.n_tokens = n_layers, d_model, d_ff, n_tokens
        self.with_h = with_h
        self.meta = dict(meta)
        self.meta.update(n_layers=n_layers, d_model=d_model, d_ff=d_ff, n_tokens=n_tokens, has_h=with_h,
                         dipsim_version=__version__)
        self.meta.setdefault("trace_dtype", _DTYPE_NAMES[self.dtype])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.part-{os.getpid()}")
        self._offsets, header = self._header(n_tokens)
        self._data_start = 8 + len(header)
        self._fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, struct.pack("<Q", len(header)) + header)
        total = self._data_start + max(end for _, end in self._offsets.values())
        os.ftruncate(self._fd, total)
        self._done = False

    def _header(self, n_tokens: int) -> tuple[dict[str, tuple[int, int]], bytes]:
        offsets: dict[str, tuple[int, int]] = {}
        entries: dict[str, Any] = {}
        pos = 0
        for name in _tensor_names(self.n_layers, self.with_h):
            width = self.d_model if name.startswith("x.") else self.d_ff
            size = n_tokens * width * self.dtype.itemsize
            offsets[name] = (pos, pos + size)
            entries[name] = {"dtype": _DTYPE_NAMES[self.dtype], "shape": [n_tokens, width],
                             "data_offsets": [pos, pos + size]}
            pos += size
        meta = dict(self.meta, n_tokens=n_tokens)
        header = {"__metadata__": {"dipsim": json.dumps(meta, sort_keys=True)}, **entries}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        return offsets, raw

    def write(self, t0: int, xs: Iterable[np.ndarray], hs: Iterable[np.ndarray] | None = None) -> None:
        xs = list(xs)
        hs = list(hs) if hs is not None else None
        if len(xs) != self.n_layers or (self.with_h and (hs is None or len(hs) != self.n_layers)):
            raise ValueError("write() needs one x (and one h) array per layer")
        for layer in range(self.n_layers):
            self._put(f"x.{layer}", t0, xs[layer], self.d_model)
            if self.with_h:
                assert hs is not None
                self._put(f"h.{layer}", t0, hs[layer], self.d_ff)

    def _put(self, name: str, t0: int, rows: np.ndarray, width: int) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != width or t0 < 0 or t0 + rows.shape[0] > self.n_tokens:
            raise ValueError(f"{name}: rows of shape {rows.shape} at token {t0} do not fit [{self.n_tokens}, {width}]")
        begin = self._data_start + self._offsets[name][0] + t0 * width * self.dtype.itemsize
        os.pwrite(self._fd, rows.tobytes(), begin)

    def commit(self, n_done: int | None = None) -> Path:
        """Finish the file with ``n_done`` tokens (default: all planned) and move it into place."""
        n_done = self.n_tokens if n_done is None else n_done
        if not 0 < n_done <= self.n_tokens:
            self.abort()
            raise DipsimError(f"{self.path}: nothing to save ({n_done} tokens captured)")
        os.fsync(self._fd)
        os.close(self._fd)
        self._done = True
        if n_done < self.n_tokens:
            self._shrink(n_done)
        os.replace(self.tmp, self.path)
        return self.path

    def _shrink(self, n_done: int) -> None:
        old = np.memmap(self.tmp, dtype=np.uint8, mode="r")
        offsets, header = self._header(n_done)
        data_start = 8 + len(header)
        small = self.tmp.with_name(self.tmp.name + ".small")
        with open(small, "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header)
            for name, (begin, _) in self._offsets.items():
                width = self.d_model if name.startswith("x.") else self.d_ff
                nbytes = n_done * width * self.dtype.itemsize
                src = self._data_start + begin
                f.write(old[src: src + nbytes].tobytes())
                assert f.tell() == data_start + offsets[name][1]
            f.flush()
            os.fsync(f.fileno())
        del old
        os.replace(small, self.tmp)

    def abort(self) -> None:
        if not self._done:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._done = True
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()


def save(path: str | os.PathLike, trace: Trace, chunk: int = 256) -> Path:
    """Write an (e.g. in-memory) trace to ``path``."""
    dtype = "float32" if trace.x(0).dtype == np.float32 else "float16"
    meta = {k: v for k, v in trace.meta.items() if k != "trace_dtype"}
    with TraceWriter(path, meta, n_layers=trace.n_layers, d_model=trace.d_model, d_ff=trace.d_ff,
                     n_tokens=trace.n_tokens, dtype=dtype,
                     with_h=trace.has_h) as w:
        for t0 in range(0, trace.n_tokens, chunk):
            t1 = min(t0 + chunk, trace.n_tokens)
            xs = [trace.x(layer)[t0:t1] for layer in range(trace.n_layers)]
            hs = [trace.h(layer)[t0:t1] for layer in range(trace.n_layers)] if trace.has_h else None
            w.write(t0, xs, hs)
        return w.commit()


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
    for key in ("n_layers", "d_model", "d_ff", "n_tokens"):
        if meta[key] <= 0:
            raise DipsimError(f"{p}: metadata field '{key}' is {meta[key]}, expected a positive integer")
    if not meta["bytes_per_weight"] > 0:
        raise DipsimError(f"{p}: metadata field 'bytes_per_weight' is {meta['bytes_per_weight']}, expected > 0")


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
