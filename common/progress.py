"""Progress bars: every long run shows one on stderr (tqdm), and none when asked to be quiet.

Every bar of dipsim is made here. A bar is built with SIGINT and SIGTERM held (``deferred``): a
signal that landed inside tqdm's constructor left a half-built bar (shown, but without its position)
whose finalizer then failed, and Python printed "Exception ignored ... Traceback" after dipsim's
one-line "interrupted" -- a traceback on an interrupt. Held, the signal is delivered as soon as the
bar is whole, and the bar is closed cleanly as the interrupt unwinds."""
from __future__ import annotations

import sys

from .interrupts import deferred


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "tok", *, initial: int = 0, leave: bool = False):
    """A tqdm bar on stderr (disabled: a no-op with the same interface). ``leave``: keep the finished
    bar on the screen (a capture's); ``initial``: units already done (a resumed run's)."""
    from tqdm import tqdm

    with deferred():
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled, file=sys.stderr,
                    dynamic_ncols=True, leave=leave)
