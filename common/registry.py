"""A registry of classes keyed by the names users type in YAML and on the command line.

    MASKING = Registry("masking policy")
    @MASKING.register("dip")
    class DIP(...): ...
    MASKING.get("dip")        # the class; an unknown name is a one-line error listing the valid ones
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import DipsimError


class Registry(dict):
    """``name -> class``; the class also gets ``cls.name = name``."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            if name in self:   # a plugin reusing a name (simulator.plugins reports it in one line)
                raise DipsimError(f"{self.kind} {name!r} is already registered (by {self[name].__module__}); "
                                  f"choose another name")
            cls.name = name
            self[name] = cls
            return cls
        return deco

    def names(self) -> list[str]:
        return sorted(self)

    def get_class(self, name: Any) -> type:
        cls = self.get(name)
        if cls is None:
            raise DipsimError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")
        return cls


def check_params(kind: str, name: str, given: Any, allowed: list[str]) -> None:
    """Refuse parameters a policy does not take, listing the ones it does."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DipsimError(f"{kind} {name!r} has no parameter {unknown[0]!r}; its parameters: "
                          f"{', '.join(allowed) or 'none'}")
