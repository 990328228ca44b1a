"""dipsim's simulator: masking and cache policies, replay, devices, engine, sweeps, accuracy."""
import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0]) == "dipsim" or "simulator.cli" in getattr(_sys, "orig_argv", [])[1:3]:
    from common.interrupts import quiet_start as _quiet_start      # the command line is starting: Ctrl-C
    _quiet_start()                                                  # before it has loaded is one line

from traces import DipsimError, __version__  # noqa: E402

from .replay import AccessLog, replay  # noqa: E402

__all__ = ["DipsimError", "__version__", "AccessLog", "replay"]
