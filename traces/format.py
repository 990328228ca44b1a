"""The trace file: activations of every gated MLP of a model, per layer and token.

A trace is a safetensors file (https://github.com/huggingface/safetensors) holding, for every
layer ``l``:

* ``x.l`` -- ``[n_tokens, d_model]``: the MLP input, what W_up and W_gate see (after the norm);
* ``h.l`` -- ``[n_tokens, d_ff]``: ``act(W_gate x) * (W_up x)``, what W_down sees (optional);
* ``g.l`` -- ``[n_tokens, d_ff]``: ``act(W_gate x)``, the gate activation alone (optional, metadata
  ``has_g``): what CATS thresholds. Traces written before it existed, and synthetic traces (which
  model x and h only), have none.

The ``__metadata__`` entry ``dipsim`` holds a JSON object with the model name, architecture,
activation, dimensions, the source weight dtype and bytes per weight, the token count, the corpus
digest and the dipsim version (see ``REQUIRED_META``).

Files are written by :class:`TraceWriter` in token chunks (bounded memory on long captures) into a
temporary file that is renamed into place only when complete, so a reader never sees a partial
trace. :func:`load` memory-maps the tensors after checking the header, shapes, dtypes, sizes and
(by default) finiteness, and names the file and the problem in one line when anything is off.
"""
from __future__ import annotations

import dataclasses
import os
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


#: what each kind of tensor holds, for messages
KINDS = {"x": "the MLP input", "h": "the GLU output act(W_gate x) * (W_up x)", "g": "the gate activation act(W_gate x)"}


def is_synthetic(meta: dict[str, Any]) -> bool:
    """Whether a trace was generated (``dipsim synth``, ``traces.synthetic``) rather than captured."""
    return bool(meta.get("synth")) or str(meta.get("model", "")).startswith(("synth:", "synthetic-"))


def _tensor_names(n_layers: int, has_h: bool, has_g: bool = False) -> list[str]:
    names = []
    for layer in range(n_layers):
        names.append(f"x.{layer}")
        if has_h:
            names.append(f"h.{layer}")
        if has_g:
            names.append(f"g.{layer}")
    return names


def _meta_int(key: str) -> property:
    """A read-only attribute: the metadata entry ``key`` as an int."""
    return property(lambda self: int(self.meta[key]), doc=f"the trace's {key} (from its metadata)")


@dataclass
class Trace:
    """Activations of one model over one corpus, memory-mapped from a trace file.

    ``x(layer)`` is ``[n_tokens, d_model]``, ``h(layer)`` and ``g(layer)`` are ``[n_tokens, d_ff]``,
    all in the file's dtype (float16 by default) and read-only.
    """

    meta: dict[str, Any]
    _x: list[np.ndarray]
    _h: list[np.ndarray] | None
    path: Path | None = None
    _g: list[np.ndarray] | None = None

    n_layers = _meta_int("n_layers")
    d_model = _meta_int("d_model")
    d_ff = _meta_int("d_ff")
    n_tokens = _meta_int("n_tokens")

    @property
    def has_h(self) -> bool:
        return self._h is not None

    @property
    def has_g(self) -> bool:
        return self._g is not None

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

    def g(self, layer: int) -> np.ndarray:
        """Gate activation ``act(W_gate x)`` of ``layer``: ``[n_tokens, d_ff]``."""
        if self._g is None:
            why = ("a synthetic trace models x and h only" if is_synthetic(self.meta) else
                   "capture it again with this version of dipsim (without --no-g)")
            raise DipsimError(f"{self.name}: the trace holds no gate activation act(W_gate x); {why}")
        return self._g[self._check_layer(layer)]

    def without_g(self) -> "Trace":
        """The same trace without its gate activations (``has_g`` false; no array is copied)."""
        return dataclasses.replace(self, meta={**self.meta, "has_g": False}, _g=None)

    def activations(self, kind: str):
        """The per-layer accessor of ``kind``: ``"x"``, ``"h"`` or ``"g"`` (see :data:`KINDS`)."""
        if kind not in KINDS:
            raise DipsimError(f"unknown activation kind {kind!r}; allowed: {', '.join(KINDS)}")
        return {"x": self.x, "h": self.h, "g": self.g}[kind]

    def _check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise DipsimError(f"{self.name}: layer {layer} out of range 0..{self.n_layers - 1}")
        return layer

    def abs_block(self, kind: str, t0: int, t1: int) -> np.ndarray:
        """``|x|``, ``|h|`` or ``|g|`` of tokens ``t0:t1`` for all layers at once, float32 ``[t1-t0, L, N]``
        (a view of a layer-major block: ``block[t]`` is a strided ``[L, N]`` array)."""
        get = self.activations(kind)
        n = self.d_model if kind == "x" else self.d_ff
        out = np.empty((self.n_layers, t1 - t0, n), dtype=np.float32)
        for layer in range(self.n_layers):
            abs_to_f32(get(layer)[t0:t1], out[layer])
        return out.transpose(1, 0, 2)

    def abs_layer(self, kind: str, layer: int, t0: int, t1: int) -> np.ndarray:
        """``|x|``, ``|h|`` or ``|g|`` of one layer for tokens ``t0:t1``, float32 ``[t1-t0, N]`` (contiguous)."""
        src = self.activations(kind)(layer)[t0:t1]
        out = np.empty(src.shape, dtype=np.float32)
        abs_to_f32(src, out)
        return out

    def summary(self) -> dict[str, Any]:
        keys = ("model", "architecture", "activation", "n_layers", "d_model", "d_ff", "n_tokens",
                "weight_dtype", "bytes_per_weight", "corpus", "corpus_digest", "context", "prefix_token",
                "first_text_token", "dipsim_version")
        return {k: self.meta[k] for k in keys if k in self.meta}

    @classmethod
    def from_arrays(cls, xs: np.ndarray, hs: np.ndarray | None, meta: dict[str, Any] | None = None,
                    gs: np.ndarray | None = None) -> "Trace":
        """An in-memory trace from ``xs [L, T, d_model]``, ``hs [L, T, d_ff]`` and optionally the gate
        activations ``gs [L, T, d_ff]`` (tests, synthetic data, the closed loop's dense pass)."""
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
        if gs is not None:
            gs = np.asarray(gs)
            if gs.shape != (L, T, full["d_ff"]):
                raise DipsimError(f"g has shape {list(gs.shape)}, expected [{L}, {T}, {full['d_ff']}]")
        full["has_g"] = gs is not None
        return cls(full, list(xs), list(hs) if hs is not None else None, None, list(gs) if gs is not None else None)


def load(path: str | os.PathLike, *, check_finite: bool = True) -> Trace:
    """Open a trace file, check it, and memory-map its tensors.

    Raises :class:`DipsimError` with a one-line message naming the file and the problem for a
    missing, truncated or corrupt file, wrong shapes or dtypes, missing metadata, or NaN/inf.
    """
    from common.stheader import check_spans, metadata_json, read_header

    h = read_header(path, "trace file")
    p = h.path
    meta = metadata_json(h, "dipsim", "dipsim trace")
    _check_meta(p, meta)
    L, T, dm, dff, has_h = meta["n_layers"], meta["n_tokens"], meta["d_model"], meta["d_ff"], meta["has_h"]
    has_g = bool(meta.get("has_g", False))     # optional: traces from before it have no gate activations
    expected = _tensor_names(L, has_h, has_g)
    extra = sorted(set(h.tensors) - set(expected))
    if extra:
        raise DipsimError(f"{p}: unexpected tensor '{extra[0]}' (a trace holds x.0..x.{L - 1}"
                          f"{' and h.0..h.' + str(L - 1) if has_h else ''}{' and g.0..g.' + str(L - 1) if has_g else ''}"
                          f"; has_h={has_h}, has_g={has_g})")
    for name in expected:
        info = h.tensors.get(name)
        if not isinstance(info, dict):
            raise DipsimError(f"{p}: tensor '{name}' missing (metadata says {L} layers, has_h={has_h}, has_g={has_g})")
        width = dm if name.startswith("x.") else dff
        if _DTYPES.get(info.get("dtype")) is None:
            raise DipsimError(f"{p}: tensor '{name}' has dtype {info.get('dtype')!r}; allowed: F16, F32")
        if info.get("shape") != [T, width]:
            raise DipsimError(f"{p}: tensor '{name}' has shape {info.get('shape')}, expected [{T}, {width}] "
                              f"(n_tokens, {'d_model' if name.startswith('x.') else 'd_ff'})")
    spans = check_spans(h)
    arrays: dict[str, np.ndarray] = {
        name: np.memmap(p, dtype=_DTYPES[dtype], mode="r", offset=h.data_start + begin, shape=tuple(shape))
        for name, (dtype, shape, begin, _) in spans.items()}
    if check_finite:
        for name, arr in arrays.items():
            _check_finite(p, name, arr)
    xs = [arrays[f"x.{layer}"] for layer in range(L)]
    hs = [arrays[f"h.{layer}"] for layer in range(L)] if has_h else None
    gs = [arrays[f"g.{layer}"] for layer in range(L)] if has_g else None
    return Trace(meta, xs, hs, path=p, _g=gs)


def _check_meta(p: Path, meta: Any) -> None:
    if not isinstance(meta, dict):
        raise DipsimError(f"{p}: corrupt dipsim metadata (not a JSON object)")
    for key, typ in REQUIRED_META.items():
        if key not in meta:
            raise DipsimError(f"{p}: metadata field '{key}' missing")
        value = meta[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool)) and (key != "model" or value)
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
    for key, check in OPTIONAL_META.items():
        if meta.get(key) is not None:
            check(meta[key], f"{p}: metadata field '{key}'")


def _flag(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise DipsimError(f"{where} is {v!r}, expected true or false")
    return v


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise DipsimError(f"{where} is {v!r}, expected a text")
    return v


def _bytes(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e15:
        raise DipsimError(f"{where} is {v!r}, expected a number of bytes")
    return float(v)


def _token(v: Any, where: str) -> int:
    """A token id or position (the prefix token's resolved id, the first text token's position)."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise DipsimError(f"{where} is {v!r}, expected a whole number >= 0")
    return v


def _error(v: Any, where: str) -> Any:
    """A validation error figure: a number >= 0, or null/NaN where it was not measured."""
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
        raise DipsimError(f"{where} is {v!r}, expected an error >= 0")
    return v


def check_validation(v: Any, where: str) -> Any:
    """The leave-one-model-out validation a fit (and every synthetic trace made from it) carries: null,
    or a mapping with ``hit_rate_abs_error_max`` and per configuration ``by_config`` entries
    (masking, gamma, keep, dram_fraction, cache, hit_rate_abs_error_max), as the readers use it."""
    if v is None:
        return v
    if not isinstance(v, dict):
        raise DipsimError(f"{where}: validation is {v!r}, expected a mapping (or null)")
    _error(v.get("hit_rate_abs_error_max"), f"{where}: validation.hit_rate_abs_error_max")
    rows = v.get("by_config", [])
    if not isinstance(rows, list):
        raise DipsimError(f"{where}: validation.by_config is {rows!r}, expected a list")
    for i, r in enumerate(rows):
        at = f"{where}: validation.by_config[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("masking"), str) or not isinstance(r.get("cache"), str):
            raise DipsimError(f"{at} is {r!r}, expected a mapping with masking, cache, keep, gamma, dram_fraction")
        for k in ("dram_fraction", "hit_rate_abs_error_max"):
            if isinstance(r.get(k), bool) or not isinstance(r.get(k), (int, float)):
                raise DipsimError(f"{at}.{k} is {r.get(k)!r}, expected a number")
        if r.get("gamma") is not None and (isinstance(r["gamma"], bool) or not isinstance(r["gamma"], (int, float))):
            raise DipsimError(f"{at}.gamma is {r['gamma']!r}, expected a number or null")
    return v


def _synth(v: Any, where: str) -> Any:
    if not isinstance(v, dict):
        raise DipsimError(f"{where} is {v!r}, expected a mapping (preset, seed, fit, validation)")
    if v.get("preset") is not None:
        _name(v["preset"], f"{where}.preset")
    return check_validation(v.get("validation"), where)


#: optional metadata, checked when present (the required fields and the sizes are checked above): every
#: field a reader takes from a trace's metadata is declared here or in REQUIRED_META / SIZE_LIMITS
OPTIONAL_META = {"tied_lm_head": _flag, "has_g": _flag, "bos": _flag, "adapter_bytes": _bytes, "corpus": _name,
                 "mlp_kind": _name, "compute_dtype": _name, "trace_dtype": _name, "note": _name, "synth": _synth,
                 "prefix_token": _token, "first_text_token": _token}


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
