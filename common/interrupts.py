"""Interrupts as exceptions, delivered at safe points and never lost.

:func:`as_exceptions` (the command line runs every verb inside it) makes SIGTERM raise
:class:`Terminated`, a KeyboardInterrupt, so that it cleans up as after Ctrl-C. Python swallows an
exception raised inside a finalizer (a ``__del__``, a weakref callback, which the garbage collector
runs at any point of the main thread): a signal whose handler ran there was lost after printing
"Exception ignored ... Traceback", and a sweep once ran to its end after SIGTERM (exit 0). Inside
:func:`as_exceptions` such a swallowed interrupt is delivered again, from outside the finalizer.

:func:`deferred` holds interrupts for code a signal must not cut in the middle. A SimPy run is
one: SimPy turns an exception raised inside one of its callbacks into the failure of an event and
carries on, so a Ctrl-C that lands there surfaces later as a confusing error of the simulation
rather than as an interrupt. Such code runs under :func:`deferred`: SIGINT and SIGTERM are only noted, ``check()`` (called between steps) and the end of the block deliver them through
the handlers that were in place -- KeyboardInterrupt, the command line's SIGTERM handler, or
nothing at all when the signal was ignored (``nohup``).

    with deferred() as check:
        for step in steps:
            step()
            check()
"""
from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it cleans up as after Ctrl-C."""


def exit_status(e: KeyboardInterrupt) -> int:
    """The command's exit status after an interrupt: 143 for SIGTERM (also when it was raised while
    another interrupt was being handled, or turned into one that says what was kept), else 130."""
    return 143 if isinstance(e, Terminated) or isinstance(e.__context__, Terminated) else 130


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a second SIGTERM kills at once
    raise Terminated()


@contextmanager
def as_exceptions() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated`; an interrupt (SIGINT or SIGTERM) whose exception a
    finalizer swallowed is delivered again, quietly, once the finalizer has returned. The main thread only."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    hook = sys.unraisablehook
    sys.unraisablehook = _redelivering(hook)
    _ACTIVE.append(True)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, previous)
        _ACTIVE.pop()


def _redelivering(hook):
    def unraisable(u) -> None:
        e = u.exc_value
        if not isinstance(e, KeyboardInterrupt) or threading.current_thread() is not threading.main_thread():
            return hook(u)
        if isinstance(e, Terminated):
            signal.signal(signal.SIGTERM, _terminate)     # the first SIGTERM took no effect: still a clean stop
        # from another thread, which runs once the finalizer has returned (if another finalizer takes
        # it again, this hook runs again); not waiting here, where an interrupt would be swallowed too
        _thread.start_new_thread(_deliver_later, (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT,))
    return unraisable


def _deliver_later(signum: int) -> None:
    """A real signal to the main thread (not ``_thread.interrupt_main``, which only sets a flag: a
    main thread waiting for a worker's result would sleep on until the next one finished); only while
    the command runs and its handler is still Python's (a second SIGTERM may since have killed)."""
    time.sleep(0.005)
    if _ACTIVE and callable(signal.getsignal(signum)):
        signal.pthread_kill(threading.main_thread().ident, signum)


_ACTIVE: list[bool] = []


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
