"""dipsim's simulator: masking and cache policies, replay, devices, engine, sweeps, accuracy."""
from traces import DipsimError, __version__

from .replay import AccessLog, replay  # noqa: E402

__all__ = ["DipsimError", "__version__", "AccessLog", "replay"]
