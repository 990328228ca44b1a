"""Linux native asynchronous I/O (io_setup / io_submit / io_getevents) through ctypes, for direct reads.

``calibrate`` and ``validate`` need a host that keeps exactly ``Q`` requests outstanding at a small,
steady per-request cost, as an inference engine's I/O thread does. Python threads doing ``preadv``
cannot: waking a thread per request costs tens of microseconds on a 2-core machine, more than a
4 KiB read on a fast SSD. Native AIO with ``O_DIRECT`` is truly asynchronous: one thread submits up
to ``Q`` reads with one system call and reaps completions with another, refilling the queue in issue
order -- the flash model's FIFO queue with ``Q`` outstanding requests.

Only the raw system calls are used (no libaio), so nothing beyond the C library is needed. On a
platform without them (not Linux, an unknown architecture, ``io_setup`` refused), :func:`available`
says why and the callers fall back to threads.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import time

# system call numbers (include/uapi/asm-generic/unistd.h, arch/x86/entry/syscalls/syscall_64.tbl)
_NR = {
    "x86_64": {"io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209},
    "aarch64": {"io_setup": 0, "io_destroy": 1, "io_submit": 2, "io_getevents": 4},
}
IOCB_CMD_PREAD = 0


class _Iocb(ctypes.Structure):       # struct iocb, include/uapi/linux/aio_abi.h (little endian)
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32), ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16), ("aio_reqprio", ctypes.c_int16),
                ("aio_fildes", ctypes.c_uint32), ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64), ("aio_flags", ctypes.c_uint32),
                ("aio_resfd", ctypes.c_uint32)]


class _Event(ctypes.Structure):      # struct io_event
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):   # struct timespec (64-bit)
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


assert ctypes.sizeof(_Iocb) == 64 and ctypes.sizeof(_Event) == 32

_libc = None
_why_not: str | None = None


def _init() -> None:
    global _libc, _why_not
    if _libc is not None or _why_not is not None:
        return
    arch = platform.machine()
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        _why_not = "native AIO is used from 64-bit Python only (the system call numbers here are 64-bit ones)"
        return
    if platform.system() != "Linux" or arch not in _NR:
        _why_not = f"native AIO system calls are known here for Linux on {', '.join(_NR)}, not {platform.system()} {arch}"
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
    except OSError as e:  # pragma: no cover
        _why_not = f"cannot load the C library: {e}"
        return
    _libc = libc


def available() -> str | None:
    """None when native AIO can be used, else the reason it cannot."""
    _init()
    if _why_not is None:
        try:
            ctx = Context(1)
            ctx.close()
        except OSError as e:
            return f"io_setup failed: {e}"
    return _why_not


def _call(name: str, *args) -> int:
    r = _libc.syscall(ctypes.c_long(_NR[platform.machine()][name]), *args)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return r


class Context:
    """An AIO context with ``depth`` request slots, each with its own aligned buffer."""

    def __init__(self, depth: int, fd: int = -1, max_request: int = 4096):
        _init()
        if _why_not is not None:
            raise OSError(0, _why_not)
        self.depth = int(depth)
        self._outstanding = 0
        self.bufs: list[mmap.mmap] = []
        self.ctx = ctypes.c_uint64(0)
        _call("io_setup", ctypes.c_uint(self.depth), ctypes.byref(self.ctx))
        self.fd = fd
        self.iocbs = (_Iocb * self.depth)()
        self.ptrs = (ctypes.POINTER(_Iocb) * self.depth)()
        self.events = (_Event * self.depth)()
        self.buf_bytes = max(int(max_request), 4096)
        self.bufs = []
        try:
            self.bufs = [mmap.mmap(-1, self.buf_bytes) for _ in range(self.depth if fd >= 0 else 0)]
        except BaseException:
            self.close()
            raise
        for j in range(self.depth if fd >= 0 else 0):
            cb = self.iocbs[j]
            cb.aio_lio_opcode = IOCB_CMD_PREAD
            cb.aio_fildes = fd
            cb.aio_buf = ctypes.addressof(ctypes.c_char.from_buffer(self.bufs[j]))
            cb.aio_data = j
            self.ptrs[j] = ctypes.pointer(cb)
        self._submit = ctypes.c_long(_NR[platform.machine()]["io_submit"])
        self._getev = ctypes.c_long(_NR[platform.machine()]["io_getevents"])

    def read_all(self, offsets, sizes, depth: int | None = None, until: float | None = None) -> int:
        """Read every (offset, size) in order, at most ``depth`` outstanding; a slot is refilled with
        the next request as soon as its read completes. With ``until`` (a ``time.perf_counter()``
        value) no request is submitted after that moment. Returns the number of requests read."""
        n = len(offsets)
        q = min(self.depth if depth is None else int(depth), self.depth, n)
        if n == 0:
            return 0
        offsets = offsets.tolist() if hasattr(offsets, "tolist") else list(offsets)
        sizes = sizes.tolist() if hasattr(sizes, "tolist") else list(sizes)
        if max(sizes) > self.buf_bytes:   # the kernel would write past the slot's buffer
            raise OSError(0, f"a request of {max(sizes)} bytes exceeds the {self.buf_bytes}-byte read buffers")
        self._outstanding = 0
        try:
            return self._read_all(offsets, sizes, n, q, until)
        except BaseException:
            self._drain()                 # leave no read in flight into buffers the next call reuses
            raise

    def _drain(self, seconds: float = 0.5) -> None:
        """Wait for (and discard) the requests still in flight, for at most ``seconds``.

        Each wait is bounded (10 ms): after an interrupt the count of requests in flight may be off
        by the batch the interrupted call had just reaped, and an unbounded wait for completions that
        never come would hang the exit. Whatever is still in flight then is ``io_destroy``'s to wait for."""
        deadline = time.perf_counter() + seconds
        wait = _Timespec(0, 10_000_000)
        while self._outstanding > 0 and time.perf_counter() < deadline:
            got = _libc.syscall(self._getev, ctypes.c_uint64(self.ctx.value), ctypes.c_long(1),
                                ctypes.c_long(self.depth), self.events, ctypes.byref(wait))
            if got < 0:
                if ctypes.get_errno() == 4:
                    continue
                return
            self._outstanding -= got

    def _read_all(self, offsets: list, sizes: list, n: int, q: int, until: float | None) -> int:
        iocbs, ptrs, events, libc = self.iocbs, self.ptrs, self.events, _libc
        ctx = self.ctx.value
        for j in range(q):
            iocbs[j].aio_offset = offsets[j]
            iocbs[j].aio_nbytes = sizes[j]
        self._submit_n(ctx, q, ptrs)
        nxt, done = q, 0
        clock = time.perf_counter
        wait = ctypes.byref(_Timespec(0, 100_000_000))   # bounded: a signal is handled within 0.1 s whatever happens
        while done < nxt:
            got = libc.syscall(self._getev, ctypes.c_uint64(ctx), ctypes.c_long(1), ctypes.c_long(q), events, wait)
            if got < 0:
                err = ctypes.get_errno()
                if err == 4:   # EINTR
                    continue
                raise OSError(err, f"io_getevents: {os.strerror(err)}")
            self._outstanding -= got
            refill = []
            for e in range(got):
                ev = events[e]
                j = ev.data
                if ev.res != iocbs[j].aio_nbytes:
                    raise OSError(0, f"direct read at offset {iocbs[j].aio_offset} returned {ev.res} of "
                                     f"{iocbs[j].aio_nbytes} bytes")
                done += 1
                if nxt < n and (until is None or clock() < until):
                    iocbs[j].aio_offset = offsets[nxt]
                    iocbs[j].aio_nbytes = sizes[nxt]
                    nxt += 1
                    refill.append(j)
            if refill:
                arr = (ctypes.POINTER(_Iocb) * len(refill))(*[ptrs[j] for j in refill])
                self._submit_n(ctx, len(refill), arr)
        return done

    def _submit_n(self, ctx: int, k: int, arr) -> None:
        off = 0
        while off < k:
            sub = arr if off == 0 else (ctypes.POINTER(_Iocb) * (k - off))(*arr[off:k])
            r = _libc.syscall(self._submit, ctypes.c_uint64(ctx), ctypes.c_long(k - off), sub)
            if r < 0:
                err = ctypes.get_errno()
                if err in (4, 11):   # EINTR, EAGAIN: try again
                    continue
                raise OSError(err, f"io_submit: {os.strerror(err)}")
            self._outstanding += r
            off += r

    def close(self) -> None:
        if self.ctx.value:
            _call("io_destroy", ctypes.c_uint64(self.ctx.value))
            self.ctx.value = 0
        for b in self.bufs:
            b.close()
        self.bufs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
