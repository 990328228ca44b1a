"""Generated traces of any geometry, for tests and benchmarks (no model needed).

Each layer has a fixed per-column importance (log-normal) and every token multiplies it by noise
that is correlated in time (an AR(1) process in log space), so a column that is large now tends to
stay large for a few tokens -- the locality a weight cache feeds on. ``rho`` sets that correlation
(0: independent tokens). Values are positive magnitudes (policies rank by |activation|). The
numbers are not a model; only the geometry and rough statistics are.
"""
from __future__ import annotations

import numpy as np

from .format import Trace

GEOMETRIES = {
    "7b": (32, 4096, 14336),          # Llama-3-8B / Mistral-7B (the DIP paper, arXiv 2412.01380)
    "phi3-mini": (32, 3072, 8192),
    "phi3-medium": (40, 5120, 17920),
    "smollm2-135m": (30, 576, 1536),
    "gemma3-270m": (18, 640, 2048),
}


def _block(rng, L, T, N, rho, spread, dtype):
    base = rng.normal(0.0, spread, size=(L, N)).astype(np.float32) + np.float32(np.log(0.05))
    out = np.empty((L, T, N), dtype=dtype)
    z = rng.standard_normal((L, N), dtype=np.float32)
    eps = np.empty((L, N), dtype=np.float32)
    val = np.empty((L, N), dtype=np.float32)
    a = np.float32(rho)
    b = np.float32(np.sqrt(max(1.0 - rho * rho, 0.0)))
    for t in range(T):
        if t:
            rng.standard_normal(out=eps, dtype=np.float32)
            z *= a
            eps *= b
            z += eps
        np.add(base, z, out=val)
        np.exp(val, out=val)
        out[:, t, :] = val  # magnitudes only: every policy ranks columns by |activation|
    return out


def synthetic_trace(n_layers: int = 4, d_model: int = 64, d_ff: int = 256, n_tokens: int = 128, *,
                    seed: int = 0, rho: float = 0.8, spread: float = 1.0, with_h: bool = True,
                    bytes_per_weight: float = 2.0, dtype=np.float16) -> Trace:
    rng = np.random.default_rng(seed)
    xs = _block(rng, n_layers, n_tokens, d_model, rho, spread, dtype)
    hs = _block(rng, n_layers, n_tokens, d_ff, rho, spread * 1.5, dtype) if with_h else None
    meta = {"model": f"synthetic-{n_layers}x{d_model}x{d_ff}", "architecture": "synthetic", "activation": "silu",
            "weight_dtype": "F16" if bytes_per_weight == 2.0 else f"{bytes_per_weight}B", "bytes_per_weight":
            float(bytes_per_weight), "corpus": f"synthetic(seed={seed}, rho={rho})", "corpus_digest": "",
            "d_ff": d_ff}
    return Trace.from_arrays(xs, hs, meta)


def synthetic_like(geometry: str, n_tokens: int, **kw) -> Trace:
    L, dm, dff = GEOMETRIES[geometry]
    return synthetic_trace(L, dm, dff, n_tokens, **kw)
