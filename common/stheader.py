"""The header of a safetensors file (https://github.com/huggingface/safetensors), read and checked
without reading a tensor: what traces and the methods' files (variants, adapters, predictors) share.

A safetensors file is an 8-byte little-endian header length, a JSON object mapping each tensor name
to ``{dtype, shape, data_offsets}`` (plus ``__metadata__``: string -> string), then the tensors'
bytes. :func:`read_header` refuses a file too short, a header length beyond the file, a header that
is not a JSON object; :func:`check_spans` refuses a tensor whose dtype is unknown, whose offsets do not
match its shape, lie outside the file or overlap another's, and bytes after the last tensor -- what
would otherwise surface as an error of the loader in the middle of a run, or go unnoticed.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DipsimError

MAX_HEADER = 100 << 20
#: bytes per element of the safetensors dtypes
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
               "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class Header:
    path: Path
    size: int                          # of the whole file
    data_start: int                    # 8 + header length
    tensors: dict[str, dict[str, Any]]  # name -> its entry (dtype, shape, data_offsets)
    metadata: dict[str, Any]           # __metadata__


def read_header(path: str | os.PathLike, what: str) -> Header:
    """The header of the safetensors file ``path`` (``what`` names the kind of file in errors)."""
    from .io import input_file

    p = input_file(path, what)
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise DipsimError(f"{p}: not a {what} (only {size} bytes; a safetensors header needs 8)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen == 0 or hlen > MAX_HEADER or 8 + hlen > size:
                raise DipsimError(f"{p}: not a {what} or truncated (header length {hlen}, file size {size})")
            raw = f.read(hlen)
    except OSError as e:
        raise DipsimError(f"{p}: cannot read it ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DipsimError(f"{p}: corrupt header ({e.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise DipsimError(f"{p}: corrupt header (not a JSON object)")
    meta = header.pop("__metadata__", None)
    return Header(p, size, 8 + hlen, header, meta if isinstance(meta, dict) else {})


def metadata_json(h: Header, key: str, what: str) -> Any:
    """The JSON value stored as text under ``__metadata__[key]``; a one-line error when absent or broken."""
    raw = h.metadata.get(key)
    if not isinstance(raw, str):
        raise DipsimError(f"{h.path}: not a {what} (safetensors metadata has no {key!r} entry)")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise DipsimError(f"{h.path}: corrupt {key} metadata ({e.__class__.__name__})") from None


def check_spans(h: Header) -> dict[str, tuple[str, list[int], int, int]]:
    """``name -> (dtype, shape, begin, end)`` of every tensor (offsets from the data start), after
    checking that each is well formed, lies inside the file and overlaps no other, and that the
    file holds nothing after them."""
    data_size = h.size - h.data_start
    spans = {}
    for name, info in h.tensors.items():
        if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES:
            raise DipsimError(f"{h.path}: tensor '{name}' has dtype {_get(info, 'dtype')!r}; not a safetensors dtype")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise DipsimError(f"{h.path}: tensor '{name}' has shape {shape!r}, not a list of sizes")
        try:
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DipsimError(f"{h.path}: tensor '{name}' has no valid data_offsets") from None
        n = DTYPE_BYTES[info["dtype"]]
        for d in shape:
            n *= d
        if end - begin != n or begin < 0:
            raise DipsimError(f"{h.path}: tensor '{name}' data_offsets {begin}..{end} do not match its shape")
        if end > data_size:
            raise DipsimError(f"{h.path}: truncated: tensor '{name}' needs bytes up to {h.data_start + end}, "
                              f"the file has {h.size}")
        spans[name] = (info["dtype"], shape, begin, end)
    order = sorted((b, e, k) for k, (_, _, b, e) in spans.items() if e > b)
    for (_, e0, n0), (b1, _, n1) in zip(order, order[1:]):
        if b1 < e0:
            raise DipsimError(f"{h.path}: tensors '{n0}' and '{n1}' overlap in the file (corrupt data_offsets)")
    used = max((e for _, _, _, e in spans.values()), default=0)
    if data_size > used:          # the format's data is exactly its tensors: more is a damaged or joined file
        raise DipsimError(f"{h.path}: {data_size - used} bytes after the last tensor (a damaged file, or two joined)")
    return spans


def _get(info: Any, key: str) -> Any:
    return info.get(key) if isinstance(info, dict) else info
