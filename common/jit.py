"""numba's compiler, set up once for all of dipsim's kernels.

``njit`` compiles with the GIL released and caches the machine code on disk, so that a command does
not pay seconds of compilation each time it starts. Two things about numba's own cache make it set
up here rather than per file:

* numba keys a function's cached code on its *own* source file, but a kernel that calls kernels of
  other files carries their compiled code too; editing only the callee's file leaves the caller's
  cache stale (seen in this project: a changed ``kernels.select_row`` kept running inside
  ``caches._kernels.keyed_layer_select``). The cache therefore lives in a folder named after a
  hash of every dipsim source file that defines kernels: any change there starts a fresh cache.
* the default location is ``__pycache__`` beside the sources, which a read-only installation lacks,
  and numba then refuses to import the module. The folder here is under ``common.io.cache_root()``
  (``~/.cache/dipsim/numba/<hash>``); when it cannot be created, kernels compile without a cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

from .io import cache_root

_ROOT = Path(__file__).resolve().parent.parent
_KERNEL_PACKAGES = ("common", "traces", "simulator")


def _source_hash() -> str:
    h = hashlib.sha256(numba.__version__.encode())
    for pkg in _KERNEL_PACKAGES:
        for f in sorted((_ROOT / pkg).rglob("*.py")):
            data = f.read_bytes()
            if b"njit" in data:
                h.update(str(f.relative_to(_ROOT)).encode())
                h.update(data)
    return h.hexdigest()[:16]


def _cache_dir() -> Path | None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])       # the user's own choice
    d = cache_root() / "numba" / _source_hash()
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return None
    return d


CACHE_DIR = _cache_dir()
if CACHE_DIR is not None:
    numba.config.CACHE_DIR = str(CACHE_DIR)

#: the decorator for every compiled kernel of dipsim
njit = numba.njit(cache=CACHE_DIR is not None, nogil=True)

#: the same, inlined into its callers at numba's IR level (small helpers of hot request loops)
njit_inline = numba.njit(cache=CACHE_DIR is not None, nogil=True, inline="always")
