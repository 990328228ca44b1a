"""Direct reads of a file on the storage to measure: a Host keeps exactly Q requests outstanding
(Linux native AIO from one thread, or Q threads), and one (size, depth) point measured."""
from __future__ import annotations

import mmap
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from common.errors import DipsimError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_SIZES = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB)
DEFAULT_DEPTHS = (1, 2, 4, 8, 16, 32)
ALIGN = 4096
MAX_LANES = 64          # threads validate may use to keep requests outstanding
MAX_REQUEST = 64 * MiB  # the largest request calibrate issues (each outstanding one has its own buffer)
MAX_DEPTH = 256         # the deepest queue calibrate keeps (the threads backend runs one thread per read)
#: file systems in memory: a direct read there measures RAM, not the storage a profile describes
MEMORY_FILE_SYSTEMS = ("tmpfs", "ramfs", "devtmpfs", "hugetlbfs")


#: the first bytes of a data file dipsim made (random data after them): only such a file is ever
#: extended; any other existing file is only read, and refused when it is too small
DATA_MAGIC = b"dipsim calibration data (random bytes; safe to delete)\n"


def check_data_file(path: str | os.PathLike, option: str = "--file") -> Path:
    """The file to measure, checked before any work: an existing regular file this process can read,
    or a new one in a folder where it can be created (a real probe: /proc, /sys, read-only mounts)."""
    from common.io import check_file, input_file

    p = Path(path)
    try:
        exists = os.path.lexists(p)
    except (OSError, ValueError):
        exists = False
    p = input_file(p, f"{option} data file") if exists else check_file(p, option)
    fs = file_system(p)
    if fs in MEMORY_FILE_SYSTEMS:
        raise DipsimError(f"{option} {p}: on {fs}, a file system in memory: its reads would measure RAM, not "
                          f"storage; give a file on the disk to measure")
    return p


def file_system(path: Path) -> str | None:
    """The type of the file system ``path`` (or, for a new file, its folder) is on, from
    /proc/self/mountinfo (None where that cannot be told)."""
    try:
        where = os.path.realpath(path if path.exists() else path.parent)
        best, kind = "", None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount = left.split()[4].replace("\\040", " ")
                inside = where == mount or where.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
        return kind
    except (OSError, IndexError, ValueError):
        return None


def _is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(DATA_MAGIC)) == DATA_MAGIC
    except OSError:
        return False


@contextmanager
def data_file(path: Path, size: int, progress: bool = True, option: str = "--file") -> Iterator[Path]:
    """``path`` holding at least ``size`` bytes while the block runs: a new file is written (random
    data, flushed to the device) and removed again if the block fails or is interrupted; a file
    dipsim made is extended; any other file is used as it is, and refused when too small (it is
    someone's data: nothing is appended to it)."""
    have = path.stat().st_size if path.exists() else 0
    if have >= size:
        yield path
        return
    if have and not _is_ours(path):
        from common.units import fmt_size

        raise DipsimError(f"{option} {path}: exists ({fmt_size(have)}) and was not made by dipsim, but "
                          f"{fmt_size(size)} are needed; give a new file name (dipsim creates it) or a file of at "
                          f"least that size (it is only read)")
    from common.io import check_space

    check_space(path, size - have, option)
    created = not have
    try:
        _write_random(path, have, size, progress)
        yield path
    except BaseException:
        if created:         # a run that did not finish leaves no gigabyte of test data behind
            path.unlink(missing_ok=True)
        raise


def _write_random(path: Path, have: int, size: int, progress: bool) -> None:
    """Append random bytes up to ``size`` (a new file starts with :data:`DATA_MAGIC`), flushed to the
    device every 64 MiB, so that an interrupt waits for at most that much."""
    from common.io import make_folder

    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=8 * MiB, dtype=np.uint8).tobytes()
    if progress:
        print(f"dipsim: writing {size / GiB:.2f} GiB of test data to {path}", file=sys.stderr, flush=True)
    make_folder(path.parent)
    try:
        with open(path, "r+b" if have else "wb") as f:
            f.seek(have)
            if not have:
                f.write(DATA_MAGIC)
                have = len(DATA_MAGIC)
            left = size - have
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
                if (size - left) % (64 * MiB) < len(block):
                    f.flush()
                    os.fsync(f.fileno())
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise DipsimError(f"{path}: cannot write the test data ({e.strerror or e})") from None


def open_direct(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT"))
    except AttributeError:
        raise DipsimError("direct I/O (O_DIRECT) is not available on this platform") from None
    except OSError as e:
        raise DipsimError(f"{path}: cannot open with O_DIRECT ({e.strerror}); the file system must support "
                          f"direct I/O (tmpfs does not)") from None


class Reader:
    """Per-thread aligned buffers over one O_DIRECT file descriptor."""

    def __init__(self, path: Path, max_request: int):
        self.fd = open_direct(path)
        self.max_request = max_request
        self._local = threading.local()

    def buf(self, n: int) -> memoryview:
        b = getattr(self._local, "buf", None)
        if b is None or len(b) < n:
            b = self._local.buf = mmap.mmap(-1, max(n, self.max_request))  # page-aligned
        return memoryview(b)[:n]

    def read(self, offset: int, size: int) -> None:
        got = os.preadv(self.fd, [self.buf(size)], offset)
        if got != size:
            raise DipsimError(f"short direct read: {got} of {size} bytes at {offset}")

    def close(self) -> None:
        os.close(self.fd)


IO_BACKENDS = ("auto", "aio", "threads")


class Host:
    """Issues direct reads with ``depth`` requests outstanding, FIFO in issue order.

    ``aio`` (Linux native AIO, :mod:`simulator.disk.aio`): one thread submits and reaps, so the host cost
    per request is a few microseconds and the queue depth is exact. ``threads``: ``depth`` threads,
    each with one ``preadv`` outstanding (portable; waking a thread per request costs tens of
    microseconds on a small machine, which the fitted ``host_overhead`` then absorbs). ``auto``
    takes ``aio`` where it works.
    """

    def __init__(self, path: Path, max_request: int, depth: int, backend: str = "auto"):
        if backend not in IO_BACKENDS:
            raise DipsimError(f"--io must be one of {', '.join(IO_BACKENDS)}, got {backend!r}")
        from . import aio as _aio

        self.depth = int(depth)
        self.reader = Reader(path, max_request)
        self.kind, self.ctx = "threads", None
        if backend != "threads":
            try:
                self.ctx = _aio.Context(self.depth, self.reader.fd, max_request)
                self.kind = "aio"
            except OSError as e:     # no native AIO here, fs.aio-max-nr reached, no memory for the buffers
                if backend == "aio":
                    self.reader.close()
                    raise DipsimError(f"--io aio: cannot set up {self.depth} asynchronous reads: "
                                      f"{e.strerror or e}") from None
        self.pool = ThreadPoolExecutor(max(self.depth - 1, 1)) if self.kind == "threads" else None

    def run(self, offsets, sizes, depth: int | None = None, until: float | None = None) -> int:
        """Read every request in order with at most ``depth`` outstanding (no new request after the
        ``time.perf_counter()`` value ``until``); returns how many were read."""
        q = min(self.depth if depth is None else int(depth), self.depth)
        if self.ctx is not None:
            try:
                return self.ctx.read_all(offsets, sizes, q, until)
            except OSError as e:
                raise DipsimError(f"direct read failed: {e.strerror or e}") from None
        n = len(sizes)
        if n == 0:
            return 0
        nxt = iter(range(n))
        lock = threading.Lock()
        counts = [0] * min(q, n)
        clock = time.perf_counter

        def lane(j: int) -> None:
            while True:
                if until is not None and clock() >= until:
                    return
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                self.reader.read(int(offsets[i]), int(sizes[i]))
                counts[j] += 1

        futs = [self.pool.submit(lane, j) for j in range(1, len(counts))]
        lane(0)
        for f in futs:
            f.result()
        return sum(counts)

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        if self.pool is not None:
            self.pool.shutdown()
        self.reader.close()


def measure_point(host: Host, file_size: int, size: int, depth: int, seconds: float, seed: int) -> dict[str, float]:
    """Random reads of ``size`` bytes, ``depth`` outstanding, for about ``seconds``."""
    rng = np.random.default_rng(seed)
    slots = (file_size - size) // ALIGN
    chunk = 20_000
    n = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop:
        offs = (rng.integers(0, slots, chunk) * ALIGN).tolist()
        n += host.run(offs, [size] * chunk, depth, until=stop)
    dt = time.perf_counter() - t0
    return {"size": size, "depth": depth, "requests": n, "seconds": dt, "iops": n / dt, "bandwidth": n * size / dt}
