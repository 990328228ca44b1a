"""What every part of dipsim shares and nothing else: the error type, atomic output files and path
checks, JSON of numpy values, text tables, units, the registry of named policies, and numba's
compiler set up once. It imports nothing of ``traces`` or ``simulator`` (the dependency rule in
docs/layout.md: common <- traces <- kernels <- masking, caches <- config <- replay <- ... <- cli).
"""
from .errors import DipsimError

__all__ = ["DipsimError"]
