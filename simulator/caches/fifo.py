"""fifo: first in, first out; a hit changes nothing.

    access(x): if x cached: hit
               else: miss; if full: evict the column inserted earliest; insert x

Columns inserted in the same step enter in ascending index order: key = insert_step * N + index.
"""
from __future__ import annotations

from . import _kernels
from .base import KeyedCache, register_cache


@register_cache("fifo")
class FIFO(KeyedCache):
    KIND = _kernels.FIFO
