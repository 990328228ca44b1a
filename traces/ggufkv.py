"""The header of a GGUF file -- its key-value pairs and its tensor table -- read without the tensors.

``gguf.GGUFReader`` parses every array of the header into numpy views, one per element: 3 s for
SmolLM2's file and 14 s for Gemma-3's (262,144 token strings), on an idle machine. dipsim needs a
few tokenizer facts before it loads a model (``traces.prefix``) and the tensors' types and sizes
(``traces.models``' bytes per weight); this walks the header once, skipping arrays by their lengths,
in about 0.1 s. And while transformers loads a GGUF it parses the header three times over (config,
tokenizer, weights): :func:`one_reader` makes the three share one parse.

Layout (GGUF v2/v3, little-endian): ``GGUF``, version u32, tensor count u64, key-value count u64,
then per pair a string key (u64 length + UTF-8), a value type u32 and the value (strings: a u64
length and bytes; arrays: an element type u32, a u64 count and the elements); then per tensor its
name, the number of dimensions u32, the dimensions u64 each, its ggml type u32 and its offset u64.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import struct
from typing import Any, Iterable, Iterator

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


def _value(m, off: int, vtype: int) -> Any:
    """A scalar or string value; an array's length."""
    if vtype in _SCALARS:
        return struct.unpack_from(_SCALARS[vtype], m, off)[0]
    if vtype == _STRING:
        return _string(m, off)[0]
    return int(struct.unpack_from("<IQ", m, off)[1])


def _walk(path, wanted: set[str] | None, tensors: bool) -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    """The wanted keys' values (None: stop after none, i.e. walk them all) and, with ``tensors``, the
    tensor table as (name, elements, ggml type)."""
    kv: dict[str, Any] = {}
    table: list[tuple[str, int, int]] = []
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m[:4] != b"GGUF":
                raise DipsimError(f"{path}: not a GGUF file (no GGUF magic)")
            version = struct.unpack_from("<I", m, 4)[0]
            if version < 2:
                raise DipsimError(f"{path}: GGUF version {version} is not supported (2 or later)")
            n_tensors, n_kv = struct.unpack_from("<QQ", m, 8)
            off = 24
            for _ in range(n_kv):
                if not tensors and wanted is not None and wanted <= kv.keys():
                    return kv, table
                key, off = _string(m, off)
                vtype = struct.unpack_from("<I", m, off)[0]
                off += 4
                if wanted is not None and key in wanted:
                    kv[key] = _value(m, off, vtype)
                off = _skip(m, off, vtype)
            for _ in range(n_tensors if tensors else 0):
                name, off = _string(m, off)
                n_dims = struct.unpack_from("<I", m, off)[0]
                dims = struct.unpack_from(f"<{n_dims}Q", m, off + 4)
                ttype = struct.unpack_from("<I", m, off + 4 + 8 * n_dims)[0]
                off += 4 + 8 * n_dims + 4 + 8
                n = 1
                for d in dims:
                    n *= int(d)
                table.append((name, n, int(ttype)))
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise DipsimError(f"{path}: cannot read its GGUF header ({e})") from None
    return kv, table


def read_keys(path: str | os.PathLike, keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` found in the GGUF's header (an array's value is its length); keys the
    file does not have are left out. A file that is not a readable GGUF is a one-line DipsimError."""
    return _walk(path, set(keys), tensors=False)[0]


def tensor_table(path: str | os.PathLike) -> list[tuple[str, int, str, int]]:
    """Every tensor of the GGUF as (name, elements, ggml type name, bytes stored)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    out = []
    for name, n, ttype in _walk(path, None, tensors=True)[1]:
        try:
            qtype = GGMLQuantizationType(ttype)
            block, size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise DipsimError(f"{path}: tensor {name} has the unknown ggml type {ttype}") from None
        out.append((name, n, qtype.name, n // block * size))
    return out


@contextlib.contextmanager
def one_reader() -> Iterator[None]:
    """While it is open, every ``gguf.GGUFReader(path)`` of the same file is one shared reader: the
    header is parsed once instead of once per transformers step (config, tokenizer, weights). A reader
    only reads its memory-mapped file, so sharing it is safe."""
    import gguf

    real = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path, mode="r"):
        key = (os.path.realpath(os.fspath(path)), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = real
        readers.clear()
