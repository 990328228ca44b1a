"""Progress bars: every long run shows one on stderr (tqdm), and none when asked to be quiet.

Every bar of dipsim is made here. A bar is built with SIGINT and SIGTERM held (``deferred``): a
signal that landed inside tqdm's constructor left a half-built bar (shown, but without its position)
whose finalizer then failed, and Python printed "Exception ignored ... Traceback" after dipsim's
one-line "interrupted" -- a traceback on an interrupt. Held, the signal is delivered as soon as the
bar is whole, and the bar is closed cleanly as the interrupt unwinds.

An interrupt can also land after a bar is made and before the code that closes it on the way out
(``try: ... finally: bar.close()``) is entered; the unwinding then keeps the bar alive in its
traceback, unclosed, and the command line's "dipsim: interrupted" was printed on the bar's line.
The command line closes every bar still open (:func:`close_all`) before it says anything."""
from __future__ import annotations

import sys
import weakref

from .interrupts import deferred


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "tok", *, initial: int = 0, leave: bool = False):
    """A tqdm bar on stderr (disabled: a no-op with the same interface). ``leave``: keep the finished
    bar on the screen (a capture's); ``initial``: units already done (a resumed run's)."""
    from tqdm import tqdm

    with deferred():
        bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled, file=sys.stderr,
                   dynamic_ncols=True, leave=leave)
        _OPEN.add(bar)
        return bar


def close_all() -> None:
    """Close every bar made here that is still open (closing twice is harmless): a bar that keeps
    its line ends it, one that does not clears it, so the next line on stderr starts a line of its own."""
    for bar in list(_OPEN):
        try:
            bar.close()
        except (OSError, ValueError):   # stderr already closed: nothing to tidy
            pass


_OPEN: weakref.WeakSet = weakref.WeakSet()
