"""Writing traces: window by window to disk (``TraceWriter``), committed atomically; ``save``."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from common.errors import DipsimError
from common.io import check_space, make_folder, remove_stale_temporaries, temp_beside

from ._version import __version__
from .format import _DTYPE_NAMES, SIZE_LIMITS, Trace, _tensor_names


class TraceWriter:
    """Writes a trace in token chunks; the file appears at ``path`` only on :meth:`commit`.

    ``write(t0, xs, hs, gs)`` stores rows ``t0 : t0 + n`` of every layer (``xs [L, n, d_model]``,
    ``hs [L, n, d_ff]``, and with ``with_g`` the gate activations ``gs [L, n, d_ff]``). ``commit(n_done)`` finishes the file; when fewer tokens than planned were
    written (an interrupted capture), the file is rewritten with exactly ``n_done`` tokens, so what
    was captured is kept and the file stays valid. Used as a context manager, an exception before
    commit removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], *, n_layers: int, d_model: int,
                 d_ff: int, n_tokens: int, dtype: str = "float16", with_h: bool = True, with_g: bool = False):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype not in _DTYPE_NAMES:
            raise DipsimError(f"trace dtype {dtype!r} not supported; allowed: float16, float32")
        self.n_layers, self.d_model, self.d_ff, self.n_tokens = n_layers, d_model, d_ff, n_tokens
        self.with_h, self.with_g = with_h, with_g
        self.meta = dict(meta)
        self.meta.update(n_layers=n_layers, d_model=d_model, d_ff=d_ff, n_tokens=n_tokens, has_h=with_h,
                         has_g=with_g, dipsim_version=__version__)
        self.meta.setdefault("trace_dtype", _DTYPE_NAMES[self.dtype])
        for key, v in (("n_layers", n_layers), ("d_model", d_model), ("d_ff", d_ff), ("n_tokens", n_tokens)):
            if not 1 <= v <= SIZE_LIMITS[key]:     # what the reader would refuse is never written
                raise DipsimError(f"{self.path}: {key} {v} is out of range 1..{SIZE_LIMITS[key]} for a trace")
        self._offsets, header = self._header(n_tokens)
        self._data_start = 8 + len(header)
        total = self._data_start + max(end for _, end in self._offsets.values())
        check_space(self.path, total, "trace")
        make_folder(self.path.parent)
        self.tmp = temp_beside(self.path)
        remove_stale_temporaries(self.path)     # what a killed capture of the same file left behind
        self._done = True                        # nothing to remove until the file is open
        try:
            self._fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._done = False
            os.write(self._fd, struct.pack("<Q", len(header)) + header)
            os.ftruncate(self._fd, total)
        except OSError as e:
            self.abort()
            raise DipsimError(f"{self.path}: cannot write the trace ({e.strerror or e})") from None

    def _header(self, n_tokens: int) -> tuple[dict[str, tuple[int, int]], bytes]:
        offsets: dict[str, tuple[int, int]] = {}
        entries: dict[str, Any] = {}
        pos = 0
        for name in _tensor_names(self.n_layers, self.with_h, self.with_g):
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

    def write(self, t0: int, xs: Iterable[np.ndarray], hs: Iterable[np.ndarray] | None = None,
              gs: Iterable[np.ndarray] | None = None) -> None:
        xs = list(xs)
        hs = list(hs) if hs is not None else None
        gs = list(gs) if gs is not None else None
        if len(xs) != self.n_layers or (self.with_h and (hs is None or len(hs) != self.n_layers)) \
                or (self.with_g and (gs is None or len(gs) != self.n_layers)):
            raise ValueError("write() needs one x (and one h, one g where the trace holds them) array per layer")
        for layer in range(self.n_layers):
            self._put(f"x.{layer}", t0, xs[layer], self.d_model)
            if self.with_h:
                assert hs is not None
                self._put(f"h.{layer}", t0, hs[layer], self.d_ff)
            if self.with_g:
                assert gs is not None
                self._put(f"g.{layer}", t0, gs[layer], self.d_ff)

    def _put(self, name: str, t0: int, rows: np.ndarray, width: int) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != width or t0 < 0 or t0 + rows.shape[0] > self.n_tokens:
            raise ValueError(f"{name}: rows of shape {rows.shape} at token {t0} do not fit [{self.n_tokens}, {width}]")
        begin = self._data_start + self._offsets[name][0] + t0 * width * self.dtype.itemsize
        try:
            os.pwrite(self._fd, rows.tobytes(), begin)
        except OSError as e:    # the disk filled up (the file is sparse until written)
            raise DipsimError(f"{self.path}: cannot write the trace ({e.strerror or e})") from None

    def commit(self, n_done: int | None = None) -> Path:
        """Finish the file with ``n_done`` tokens (default: all planned) and move it into place."""
        n_done = self.n_tokens if n_done is None else n_done
        if not 0 < n_done <= self.n_tokens:
            self.abort()
            raise DipsimError(f"{self.path}: nothing to save ({n_done} tokens captured)")
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._done = True
            if n_done < self.n_tokens:
                self._shrink(n_done)
            os.replace(self.tmp, self.path)
        except BaseException as e:       # a full disk, a second Ctrl-C: no half-written file stays behind
            self.abort()
            if isinstance(e, OSError):
                raise DipsimError(f"{self.path}: cannot write the trace ({e.strerror or e})") from None
            raise
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
        self.tmp.with_name(self.tmp.name + ".small").unlink(missing_ok=True)

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
                     with_h=trace.has_h, with_g=trace.has_g) as w:
        for t0 in range(0, trace.n_tokens, chunk):
            t1 = min(t0 + chunk, trace.n_tokens)
            xs = [trace.x(layer)[t0:t1] for layer in range(trace.n_layers)]
            hs = [trace.h(layer)[t0:t1] for layer in range(trace.n_layers)] if trace.has_h else None
            gs = [trace.g(layer)[t0:t1] for layer in range(trace.n_layers)] if trace.has_g else None
            w.write(t0, xs, hs, gs)
        return w.commit()
