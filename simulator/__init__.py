"""dipsim's simulator: masking and cache policies, replay, devices, engine, sweeps, accuracy."""
from traces import DipsimError, __version__

__all__ = ["DipsimError", "__version__"]
