"""Synthetic traces from a model fitted to real ones, checked on models it never saw.

    from traces import synth
    fit = synth.fit_traces(["smollm2-135m-1024.safetensors", ...])   # statistics of real traces
    fit = synth.Fit.load()                                          # or the fit shipped with dipsim
    synth.like("phi3-medium", 1024, "phi3m.safetensors", fit=fit)   # a 14B-class trace, streamed to disk
    simulator.synth_validation.validate(fit, {"smollm2-135m": traces.load(...), ...})  # leave one out

``stats`` measures, ``model`` pools and fits, ``generate`` streams (``simulator.synth_validation`` checks,
since it replays),
``presets`` holds the large models' geometries. NOTES.md says what was tried and rejected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from common.errors import DipsimError
from ..format import Trace, load
from . import presets
from .generate import generate_trace, write_trace
from .model import DEFAULT_FIT, Fit, ModelStats
from .presets import PRESETS
from .stats import MAX_LAG, trace_stats

#: the shortest real trace a fit measures (its persistence statistics look up to MAX_LAG tokens back)
MIN_FIT_TOKENS = 16

__all__ = ["Fit", "ModelStats", "PRESETS", "DEFAULT_FIT", "fit_traces", "like", "like_meta", "generate_trace",
           "write_trace", "presets"]


def fit_traces(sources: Iterable[str | os.PathLike | Trace], tokens: int | None = None,
               log: Callable[[str], None] | None = None) -> Fit:
    """Measure every real trace (paths or loaded traces) and return the fit of all of them."""
    models: list[ModelStats] = []
    for src in sources:
        t = src if isinstance(src, Trace) else load(src)
        if not t.has_h:
            raise DipsimError(f"{t.name}: the trace holds no h (GLU outputs); the model needs both groups -- "
                              f"capture it without --no-h")
        if "synth" in t.meta:
            raise DipsimError(f"{t.name}: a synthetic trace ({t.meta['model']}); the model is fitted to real traces "
                              f"(dipsim trace), not to its own output")
        n = min(t.n_tokens, tokens or t.n_tokens)
        if n < MIN_FIT_TOKENS:
            raise DipsimError(f"{t.name}: {n} tokens; measuring a model's statistics (persistence over lags up to "
                              f"{MAX_LAG}) needs at least {MIN_FIT_TOKENS}")
        if any(m.model == t.meta["model"] for m in models):
            raise DipsimError(f"{t.name}: a second trace of model {t.meta['model']!r}; give one trace per model")
        stats = trace_stats(t, tokens)
        meta = dict(t.meta, n_tokens=min(t.n_tokens, tokens or t.n_tokens))
        models.append(ModelStats.from_trace_stats(meta, stats))
        if log:
            log(f"measured {t.meta['model']}: {t.n_layers} x {t.d_model} x {t.d_ff}, {meta['n_tokens']} tokens")
    if not models:
        raise DipsimError("no traces to fit; give at least one (--traces FILE ...)")
    return Fit(models)


def like_meta(name: str, fit: Fit, *, seed: int = 0, weight_format: str | float | None = None) -> dict[str, Any]:
    """Metadata of a synthetic trace of preset ``name``: the geometry, static parameters, format, and
    under ``synth`` the fit it came from and that fit's leave-one-model-out validation error."""
    preset = presets.get(name)
    meta = preset.meta(weight_format)
    meta.update(corpus=f"synthetic (dipsim synth, seed {seed})", corpus_digest=fit.digest(), bos=False)
    meta["synth"] = {"preset": name, "seed": seed, "fit": fit.summary(),
                     "validation": fit.validation,
                     "note": "activations generated from a model fitted to real traces; hit rates carry the "
                             "validation error below (measured on held-out real models, not on this geometry)"
                             if fit.validation else "the fit was not validated: no error is known"}
    return meta


def like(name: str, n_tokens: int, out: str | os.PathLike, *, seed: int = 0, weight_format: str | float | None = None,
         fit: Fit | None = None, threads: int = 2, progress: bool = False) -> Path:
    """Generate ``n_tokens`` of preset ``name`` (see ``presets.PRESETS``) into the trace file ``out``."""
    fit = fit or Fit.load()
    p = presets.get(name)
    meta = like_meta(name, fit, seed=seed, weight_format=weight_format)
    return write_trace(out, fit, p.n_layers, p.d_model, p.d_ff, n_tokens, seed=seed, meta=meta, threads=threads,
                       progress=progress)
