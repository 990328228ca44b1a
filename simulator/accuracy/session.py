"""What one process keeps between closed-loop runs: the model it loaded last and that model's last dense
pass, so that the trials of a search -- each a call of ``evaluate`` with one configuration, in the
main process (``--jobs 1``) or in a pool or Dask worker -- load the model and run the dense forward
once per process instead of once per trial.

Bounded: one model and one dense pass (with the dense row's scores) per process. Asking for another
model drops both first; another dense pass of the same model replaces the one kept. In float32 that
is, for SmolLM2-135M over 1024 tokens, about 0.54 GB of weights, 0.45 GB of dense pass (x, h and g of
every layer) and 0.2 GB of dense log-probabilities; for Qwen2.5-Coder-1.5B over 512 tokens about
6.2 GB, 1.1 GB and 0.3 GB -- per process, so a search with ``--jobs 2`` keeps two copies (a worker
without the cache held as much while its trial ran). ``release()`` drops them (the sweep does once
its closed-loop runs are done).

Keys are what decides the objects, nothing less:

* the model: its files (``store.model_key``: the name and the files' sizes and dates or leading
  bytes) and the compute dtype;
* the dense pass: the model's key, the token sequence (the corpus digest, the number of text tokens,
  the resolved prefix token), the dense prompt length (``prefill``) and whether the gate activations
  were recorded; a pass with them serves a run that needs none (x and h do not depend on the gate
  hook, which only reads the gate projection's output), and a run that needs them replaces one
  without.

Invisible in results: a kept pass holds the very arrays the dense forward computes again (a test
runs a search with and without the cache and compares every metric). Only models named by a
string are kept; a ``LoadedModel`` handed in is used as is, since its owner may change its weights
between calls. A run that fails drops what is kept (its model may be left half-changed). Runs in
one process are serialized by a lock, since the kept model is shared (a Dask worker may run tasks in
threads).
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_LOCK = threading.RLock()
#: (model key, the LoadedModel) or None
_MODEL: list[Any] = [None]
#: (dense key, with gate activations, the pass's result) or None
_DENSE: list[Any] = [None]


def release() -> None:
    """Drop the kept model and dense pass (their memory is freed once nothing else holds them)."""
    with _LOCK:
        had = _MODEL[0] is not None or _DENSE[0] is not None
        _MODEL[0] = _DENSE[0] = None
        if had:
            gc.collect()


def kept() -> dict[str, Any]:
    """What this process keeps now: ``model`` (its key or None) and ``dense`` (its key or None)."""
    with _LOCK:
        return {"model": _MODEL[0][0] if _MODEL[0] else None, "dense": _DENSE[0][0] if _DENSE[0] else None}


@contextmanager
def model(spec: Any, key: str, dtype: str = "float32") -> Iterator[Any]:
    """The loaded model ``spec`` (``traces.models.load_model``), kept for the next run with the same
    ``key`` (``store.model_key`` of its source) and dtype; held under the process's lock while the
    block runs; an error in the block drops what is kept. A ``LoadedModel`` handed in is used as is
    and not kept (its owner may change its weights between calls)."""
    from traces.models import LoadedModel, load_model

    if isinstance(spec, LoadedModel):
        yield spec
        return
    with _LOCK:
        k = f"{key}|{dtype}"
        if _MODEL[0] is None or _MODEL[0][0] != k:
            release()            # one model at a time: the old one goes before the new one loads
            _MODEL[0] = (k, load_model(spec, dtype=dtype))
        try:
            yield _MODEL[0][1]
        except BaseException:
            release()
            raise


def dense_pass(key: str, gate: bool, compute: Callable[[bool], Any]) -> Any:
    """The dense pass of ``key`` (see the module docstring; the caller builds the key with the model's),
    computed by ``compute(gate)`` unless kept; ``gate``: the run needs the gate activations."""
    with _LOCK:
        hit = _DENSE[0]
        if hit is None or hit[0] != key or (gate and not hit[1]):
            hit = _DENSE[0] = None     # the old pass's memory is free before the new one is made
            _DENSE[0] = (key, gate, compute(gate))
            return _DENSE[0][2]
        trace, *rest = hit[2]    # kept with g, asked without: the same x and h, no g
        return (trace.without_g() if hit[1] and not gate else trace, *rest)
