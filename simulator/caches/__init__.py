"""DRAM cache policies for weight columns, one module each, registered under their YAML names.

    from simulator import caches
    cache = caches.make("lru", n_layers=L, n_columns=N, capacity=C)   # C per layer: int or [L] ints
    hits = cache.step(mask)        # [L, N] bool; hits counted before this step's insertions
    cache.resident                 # [L, N] bool view
    opt = caches.make("belady", n_layers=L, n_columns=N, capacity=C, future=masks)  # [T, L, N]
    hits = cache.run(ids, layer=0)  # single-column requests, one compiled loop (O(1) per request)
    seq = caches.make("lru", n_layers=L, n_columns=N, capacity=C, step_model="sequential")

See ``caches.base`` for the step semantics shared by all policies (sets larger than the capacity
included, and the ``sequential`` step model) and ``caches.reference`` for the plain per-request
definitions they are tested against. ``caches.plain.PythonCache`` is the base of policies written in
plain Python (a plugin's): two hooks, the same step semantics.
"""
from . import arc, belady, fifo, lfu, lru, none, pinned, s3fifo, window  # noqa: F401  (registration)
from .base import REGISTRY, CachePolicy, KeyedCache, as_capacity, make, names, policy_params, register_cache
from .plain import PythonCache

__all__ = ["REGISTRY", "CachePolicy", "KeyedCache", "PythonCache", "as_capacity", "make", "names", "policy_params",
           "register_cache"]
