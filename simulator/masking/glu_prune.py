"""glu-prune: prune only W_down's columns by top-k |GLU(x)|; W_up and W_gate stay dense.

The CATS / TEAL-style baseline of the DIP paper: up and gate must be computed in full to know
GLU(x), so only the down projection saves reads.
    up/gate group: mask = all columns
    down group:    mask = top-k of |GLU(x)|
It is DIP restricted to the down group: the same selection, with ``prunes`` leaving up/gate dense.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import register_masking
from .dip import DIP


@register_masking("glu-prune")
@dataclass(frozen=True)
class GLUPrune(DIP):
    prunes = ("down",)
