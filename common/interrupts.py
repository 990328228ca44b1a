"""Interrupts at safe points, for code a signal must not cut in the middle.

A SimPy run is one: SimPy turns an exception raised inside one of its callbacks into the failure of
an event and carries on, so a Ctrl-C that lands there surfaces later as a confusing error of the
simulation rather than as an interrupt. Such code runs under :func:`deferred`: SIGINT and SIGTERM
are only noted, ``check()`` (called between steps) and the end of the block deliver them through
the handlers that were in place -- KeyboardInterrupt, the command line's SIGTERM handler, or
nothing at all when the signal was ignored (``nohup``).

    with deferred() as check:
        for step in steps:
            step()
            check()
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred() -> Iterator[Callable[[], None]]:
    """Note SIGINT/SIGTERM while the block runs; yield ``check()``, which delivers a noted signal."""
    if threading.current_thread() is not threading.main_thread():   # signals reach the main thread only
        yield lambda: None
        return
    noted: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in SIGNALS}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)

    def deliver() -> None:
        if noted:
            restore()
            first = noted[0]
            noted.clear()
            signal.raise_signal(first)         # through the handler the signal had before the block

    try:
        yield deliver
    finally:
        restore()
        deliver()


def quiet_start() -> None:
    """While dipsim's command line loads its modules (a second or more), Ctrl-C ends it with status
    130 and one line, not with Python's traceback of whatever module was loading; the command line
    takes Ctrl-C over with :func:`end_quiet_start`. A SIGINT ignored from the start (``nohup``, a
    background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _quiet_exit)


def end_quiet_start() -> None:
    if signal.getsignal(signal.SIGINT) is _quiet_exit:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _quiet_exit(signum, frame) -> None:
    import os

    os.write(2, b"dipsim: interrupted while starting; nothing done\n")
    os._exit(130)
