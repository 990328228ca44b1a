"""The key-value header of a GGUF file, read without its tensors.

``gguf.GGUFReader`` parses every array of the header into Python objects and every tensor's
description: 3 s for SmolLM2's file and 14 s for Gemma-3's (262,144 token strings). The few
tokenizer facts dipsim needs before it loads a model (``traces.prefix``) sit in the same header; this
walks it once, skipping the arrays by their lengths, in about 0.1 s.

Layout (GGUF v2/v3, little-endian): ``GGUF``, version u32, tensor count u64, key-value count u64,
then per pair a string key (u64 length + UTF-8), a value type u32 and the value; strings are a u64
length and bytes, arrays an element type u32, a u64 count and the elements.
"""
from __future__ import annotations

import mmap
import os
import struct
from typing import Any, Iterable

from common.errors import DipsimError

#: value type -> struct format of the scalar types (8: string, 9: array)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _string(m, off: int) -> tuple[str, int]:
    n = struct.unpack_from("<Q", m, off)[0]
    end = off + 8 + n
    if end > len(m):
        raise ValueError("string past the end of the file")
    return bytes(m[off + 8:end]).decode("utf-8"), end


def _skip(m, off: int, vtype: int) -> int:
    if vtype in _SCALARS:
        return off + struct.calcsize(_SCALARS[vtype])
    if vtype == _STRING:
        return off + 8 + struct.unpack_from("<Q", m, off)[0]
    if vtype != _ARRAY:
        raise ValueError(f"unknown value type {vtype}")
    etype, count = struct.unpack_from("<IQ", m, off)
    off += 12
    if etype in _SCALARS:
        return off + count * struct.calcsize(_SCALARS[etype])
    for _ in range(count):
        off = _skip(m, off, etype)
    return off


def read_keys(path: str | os.PathLike, keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` found in the GGUF's header (an array's value is its length); keys the
    file does not have are left out. A file that is not a readable GGUF is a one-line DipsimError."""
    wanted = set(keys)
    out: dict[str, Any] = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m[:4] != b"GGUF":
                raise DipsimError(f"{path}: not a GGUF file (no GGUF magic)")
            version = struct.unpack_from("<I", m, 4)[0]
            if version < 2:
                raise DipsimError(f"{path}: GGUF version {version} is not supported (2 or later)")
            n_kv = struct.unpack_from("<Q", m, 16)[0]
            off = 24
            for _ in range(n_kv):
                if wanted <= out.keys():
                    break
                key, off = _string(m, off)
                vtype = struct.unpack_from("<I", m, off)[0]
                off += 4
                if key in wanted and vtype in _SCALARS:
                    out[key] = struct.unpack_from(_SCALARS[vtype], m, off)[0]
                elif key in wanted and vtype == _STRING:
                    out[key] = _string(m, off)[0]
                elif key in wanted and vtype == _ARRAY:
                    out[key] = int(struct.unpack_from("<IQ", m, off)[1])
                off = _skip(m, off, vtype)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise DipsimError(f"{path}: cannot read its GGUF header ({e})") from None
    return out
