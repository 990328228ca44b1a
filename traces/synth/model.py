"""The fitted trace model: per-model statistics of real traces, pooled by relative depth.

Generative form, per layer l and group (x: d_model columns, h: d_ff columns), every column n
independent of the others::

    log|a[t, n]| = mu[n] + sig[n] * shape(z[t, n]),      z = Phi^-1(2 Phi(|y|) - 1)
    y[t, n]      = sqrt(w1) y1[t, n] + sqrt(w2) y2[t, n] + sqrt(1 - w1 - w2) e[t, n]
    y_i[t, n]    = phi_i y_i[t-1, n] + sqrt(1 - phi_i^2) e_i[t, n]        (e, e_i iid N(0, 1))

* ``mu[n]`` is drawn from the layer's quantile function of column medians (the heavy tail of
  column importance), ``log sig[n]`` from a normal whose mean and sd depend on the column's rank in
  ``mu`` (16 bins);
* ``shape`` maps a standard normal to the standardized per-token log-magnitude (a table at 25
  normal-score levels, linear in between and beyond), so every column has the real marginal;
* ``y`` is a signed Gaussian process, a sum of a fast and a slow AR(1) and white noise (its
  autocorrelation ``w1 phi1^lag + w2 phi2^lag``), and a column ranks by ``|y|``: the folded
  Gaussian copula of ``copula.py``, persistent in the upper tail only, as the real traces are.
  The measured autocorrelation of ``z`` (lags 1..64) is unfolded into y's and the mixture fitted
  to it (the fast part decides the next token's overlap, the slow part the larger caches).

A :class:`Fit` holds the statistics of each real model layer by layer (``stats.layer_stats``);
:meth:`Fit.layer_params` evaluates them at the relative depths ``l / (L - 1)`` of the layers to
generate (linear between a model's layers) and averages over the models. Width is not a variable
of the pooled model: leave-one-model-out showed no gain from a trend in log width (NOTES.md).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.io import atomic
from ..format import check_validation
from .copula import unfold_acf
from .stats import MAX_LAG, N_SIG_BINS, Z_LEVELS

FIT_VERSION = 1
STAT_KEYS = ("mu", "lsig_mean", "lsig_sd", "shape", "acf")
STAT_WIDTH = {"mu": len(Z_LEVELS), "lsig_mean": N_SIG_BINS, "lsig_sd": N_SIG_BINS, "shape": len(Z_LEVELS),
              "acf": MAX_LAG}
DEFAULT_FIT = Path(__file__).with_name("fit.json")
MAX_FIT_BYTES = 64 << 20       # the shipped fit is 217 KB


@dataclass
class ModelStats:
    """One real model's statistics: ``groups[kind][key]`` is ``[n_layers, width]``."""

    model: str
    n_layers: int
    d_model: int
    d_ff: int
    n_tokens: int
    corpus_digest: str
    groups: dict[str, dict[str, np.ndarray]]

    @classmethod
    def from_trace_stats(cls, meta: dict[str, Any], per_layer: dict[str, list[dict[str, np.ndarray]]]) -> "ModelStats":
        groups = {kind: {k: np.array([row[k] for row in rows]) for k in STAT_KEYS} for kind, rows in per_layer.items()}
        return cls(str(meta["model"]), int(meta["n_layers"]), int(meta["d_model"]), int(meta["d_ff"]),
                   int(meta["n_tokens"]), str(meta.get("corpus_digest", "")), groups)

    def at_depth(self, kind: str, key: str, r: np.ndarray) -> np.ndarray:
        """Statistic ``key`` at relative depths ``r`` (0 = first layer, 1 = last), linear in between."""
        arr = self.groups[kind][key]
        pos = np.asarray(r, dtype=float) * (self.n_layers - 1)
        lo = np.clip(np.floor(pos).astype(int), 0, self.n_layers - 1)
        hi = np.minimum(lo + 1, self.n_layers - 1)
        w = (pos - lo)[:, None]
        return arr[lo] * (1 - w) + arr[hi] * w


@dataclass
class GroupParams:
    """Generation parameters of one group for every layer to generate."""

    mu: np.ndarray         # [L, len(Z_LEVELS)] quantiles of column medians (log), centred
    lsig_mean: np.ndarray  # [L, N_SIG_BINS]
    lsig_sd: np.ndarray    # [L, N_SIG_BINS]
    shape: np.ndarray      # [L, len(Z_LEVELS)] standardized log|a| at Z_LEVELS
    ar: np.ndarray         # [L, 4]: phi1, phi2, w1, w2


@dataclass
class Fit:
    models: list[ModelStats]
    validation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [m.model for m in self.models]

    def without(self, name: str) -> "Fit":
        """The fit of every model but ``name`` (leave-one-model-out)."""
        if name not in self.names:
            raise DipsimError(f"model {name!r} is not in the fit; fitted: {', '.join(self.names)}")
        return Fit([m for m in self.models if m.model != name])

    def layer_params(self, n_layers: int) -> dict[str, GroupParams]:
        """Parameters of ``n_layers`` layers: every model's statistics at the same relative depths,
        averaged over models (quantile functions averaged level by level), then the AR mixture
        fitted to the averaged autocorrelation."""
        if not self.models:
            raise DipsimError("the fit holds no models")
        r = np.arange(n_layers) / max(n_layers - 1, 1)
        kinds = [k for k in ("x", "h") if all(k in m.groups for m in self.models)]
        out = {}
        for kind in kinds:
            avg = {key: np.mean([m.at_depth(kind, key, r) for m in self.models], axis=0) for key in STAT_KEYS}
            ar = np.array([fit_ar_mixture(unfold_acf(row)) for row in avg["acf"]])
            out[kind] = GroupParams(avg["mu"], avg["lsig_mean"], avg["lsig_sd"], avg["shape"], ar)
        return out

    def summary(self) -> dict[str, Any]:
        """What a synthetic trace's metadata records about the fit it came from."""
        return {"version": FIT_VERSION, "digest": self.digest(),
                "models": [{"model": m.model, "n_layers": m.n_layers, "d_model": m.d_model, "d_ff": m.d_ff,
                            "n_tokens": m.n_tokens, "corpus_digest": m.corpus_digest} for m in self.models]}

    def digest(self) -> str:
        body = json.dumps(self._models_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ JSON
    def _models_json(self) -> list[dict[str, Any]]:
        return [{"model": m.model, "n_layers": m.n_layers, "d_model": m.d_model, "d_ff": m.d_ff,
                 "n_tokens": m.n_tokens, "corpus_digest": m.corpus_digest,
                 "groups": {kind: {k: np.round(v, 4).tolist() for k, v in g.items()} for kind, g in m.groups.items()}}
                for m in self.models]

    def to_json(self) -> dict[str, Any]:
        return {"dipsim_synth_fit": FIT_VERSION, "z_levels": Z_LEVELS.tolist(), "sig_bins": N_SIG_BINS,
                "max_lag": MAX_LAG, "models": self._models_json(), "validation": self.validation, **self.extra}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Fit":
        from common.io import input_file

        p = Path(path) if path is not None else DEFAULT_FIT
        if path is None and not p.is_file():
            raise DipsimError(f"--fit {p}: file not found (the default fit ships with dipsim; regenerate it with: "
                              f"dipsim synth fit)")
        p = input_file(p, "--fit file")
        if p.stat().st_size > MAX_FIT_BYTES:
            raise DipsimError(f"--fit {p}: {p.stat().st_size} bytes; a fit is a few hundred kilobytes")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise DipsimError(f"--fit {p}: not a JSON file ({e.__class__.__name__})") from None
        return cls.from_json(data, str(p))

    @classmethod
    def from_json(cls, data: Any, where: str = "fit") -> "Fit":
        if not isinstance(data, dict) or data.get("dipsim_synth_fit") != FIT_VERSION:
            raise DipsimError(f"{where}: not a dipsim synth fit of version {FIT_VERSION} (field 'dipsim_synth_fit')")
        if data.get("z_levels") != Z_LEVELS.tolist() or data.get("max_lag") != MAX_LAG \
                or data.get("sig_bins") != N_SIG_BINS:
            raise DipsimError(f"{where}: fitted on other statistic grids (z_levels, max_lag, sig_bins); refit with "
                              f"dipsim synth fit")
        if not isinstance(data.get("models"), list):
            raise DipsimError(f"{where}: field 'models' must be a list of fitted models")
        models = [_model_from_json(m, where) for m in data["models"]]
        if not models:
            raise DipsimError(f"{where}: field 'models' is empty; a fit needs at least one real model")
        check_validation(data.get("validation"), where)
        extra = {k: v for k, v in data.items() if k not in ("dipsim_synth_fit", "z_levels", "sig_bins", "max_lag",
                                                             "models", "validation")}
        return cls(models, data.get("validation"), extra)


def _model_from_json(m: Any, where: str) -> ModelStats:
    try:
        groups = {kind: {k: np.asarray(g[k], dtype=float) for k in STAT_KEYS} for kind, g in m["groups"].items()}
        ms = ModelStats(str(m["model"]), int(m["n_layers"]), int(m["d_model"]), int(m["d_ff"]), int(m["n_tokens"]),
                        str(m.get("corpus_digest", "")), groups)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DipsimError(f"{where}: a model entry is incomplete ({e.__class__.__name__}: {e})") from None
    for kind, g in ms.groups.items():
        for k, v in g.items():
            if v.shape != (ms.n_layers, STAT_WIDTH[k]) or not np.isfinite(v).all():
                raise DipsimError(f"{where}: model {ms.model} {kind}.{k} has shape {list(v.shape)}, expected "
                                  f"[{ms.n_layers}, {STAT_WIDTH[k]}] of finite numbers")
    return ms


# ------------------------------------------------------------------- AR mixture
_PHI = np.concatenate([np.linspace(0.0, 0.9, 46), [0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985,
                                                    0.99, 0.993, 0.996]])


def fit_ar_mixture(acf_lags: np.ndarray) -> tuple[float, float, float, float]:
    """``(phi1, phi2, w1, w2)`` with ``w1 phi1^lag + w2 phi2^lag`` closest to ``acf_lags`` (lags 1..n).

    Weighted least squares (weight 1/sqrt(lag): the first lags decide most of the hit rate, the
    tail the rest) over a grid of phi1 < phi2, the weights in closed form, kept in w >= 0,
    w1 + w2 <= 0.99. A layer without persistence (the first layers) gets w = 0.
    """
    y = np.asarray(acf_lags, dtype=float)
    lags = np.arange(1, len(y) + 1, dtype=float)
    sw = 1.0 / np.sqrt(lags)
    i, j = np.triu_indices(len(_PHI), k=1)
    A1 = (_PHI[i][:, None] ** lags) * sw          # [pairs, lags]
    A2 = (_PHI[j][:, None] ** lags) * sw
    yw = y * sw
    a11, a22, a12 = (A1 * A1).sum(1), (A2 * A2).sum(1), (A1 * A2).sum(1)
    b1, b2 = A1 @ yw, A2 @ yw
    det = a11 * a22 - a12 * a12
    ok = np.abs(det) > 1e-12
    w1 = np.where(ok, (a22 * b1 - a12 * b2) / np.where(ok, det, 1), 0.0)
    w2 = np.where(ok, (a11 * b2 - a12 * b1) / np.where(ok, det, 1), 0.0)
    # outside the constraints: the best single component of the pair instead
    bad = (w1 < 0) | (w2 < 0) | ~ok
    s1 = np.where(a11 > 0, b1 / np.maximum(a11, 1e-300), 0.0).clip(0, 0.99)   # phi = 0: no weight to fit
    s2 = np.where(a22 > 0, b2 / np.maximum(a22, 1e-300), 0.0).clip(0, 0.99)
    r1 = ((yw - s1[:, None] * A1) ** 2).sum(1)
    r2 = ((yw - s2[:, None] * A2) ** 2).sum(1)
    w1 = np.where(bad, np.where(r1 <= r2, s1, 0.0), w1)
    w2 = np.where(bad, np.where(r1 <= r2, 0.0, s2), w2)
    total = w1 + w2
    scale = np.where(total > 0.99, 0.99 / np.maximum(total, 1e-300), 1.0)
    w1, w2 = w1 * scale, w2 * scale
    res = ((yw - w1[:, None] * A1 - w2[:, None] * A2) ** 2).sum(1)
    best = int(np.argmin(res))
    return float(_PHI[i[best]]), float(_PHI[j[best]]), float(w1[best]), float(w2[best])
