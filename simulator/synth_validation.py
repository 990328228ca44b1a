"""Leave-one-model-out validation: does a trace generated without a model look like it to a cache?

For each real model: fit on the others (``Fit.without``), generate a trace of the held-out
model's geometry, and replay both with the same configurations: LRU hit rate (by bytes, after the
warm-up) at 25/50/75% of the MLP in DRAM for dip keep 0.5 and dip-ca gamma 0.5 and 0.2 (keep 0.5),
flash bytes per token for each, and the LRU miss-ratio curve of dip keep 0.5 at 21 sizes.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from common.errors import DipsimError

from traces.format import Trace
from traces.synth.generate import generate_trace
from traces.synth.model import Fit
from traces.synth.stats import compare_stats

#: (masking, gamma) x budget: the rows of the table, per held-out model
POLICIES: tuple[tuple[str, float | None], ...] = (("dip", None), ("dip-ca", 0.5), ("dip-ca", 0.2))
BUDGETS: tuple[float, ...] = (0.25, 0.5, 0.75)
KEEP = 0.5
MRC_FRACTIONS = tuple(i / 20 for i in range(21))


def policy_label(masking: str, gamma: float | None) -> str:
    return masking if gamma is None else f"{masking} g{gamma:g}"


def replay_figures(trace: Trace, tokens: int, warmup: int) -> dict[str, Any]:
    """Hit rate and flash bytes per token for every (policy, budget), and the dip LRU curve."""
    from . import mrc
    from .replay import replay

    rows = []
    for masking, gamma in POLICIES:
        params = {} if gamma is None else {"gamma": gamma}
        for budget in BUDGETS:
            tot = replay(trace, masking, "lru", keep=KEEP, dram_fraction=budget, warmup=warmup,
                         tokens=tokens, **params).totals()
            rows.append({"masking": masking, "gamma": gamma, "dram_fraction": budget, "hit_rate": tot["hit_rate"],
                         "flash_bytes_per_token": tot["flash_bytes_per_token"]})
    curve = mrc.curve(trace, "dip", keep=KEEP, fractions=MRC_FRACTIONS, opt=False, warmup=warmup, tokens=tokens)
    return {"rows": rows, "mrc": [r["lru.hit_rate"] for r in curve]}


def validation_tokens(real: dict[str, Trace], tokens: int | None, warmup: int, option: str) -> int:
    """The tokens the validation replays: ``tokens`` (given: at most the shortest real trace), else
    1024 or the shortest trace if shorter; refused when the warm-up leaves none to measure."""
    shortest = min(t.n_tokens for t in real.values())
    if tokens is not None and tokens > shortest:
        name = min(real, key=lambda k: real[k].n_tokens)
        raise DipsimError(f"{option} {tokens}: more than the {shortest} tokens of the real trace of {name}; give at "
                          f"most {shortest}")
    tokens = min(tokens or 1024, shortest)
    if warmup >= tokens:
        raise DipsimError(f"--warmup {warmup} leaves none of the {tokens} tokens to measure; lower it")
    return tokens


def validate(fit: Fit, real: dict[str, Trace], *, tokens: int = 1024, warmup: int = 16, seed: int = 0,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Leave-one-model-out over the models of ``real`` (name -> its real trace; each must be in ``fit``)."""
    say = log or (lambda _msg: None)
    rows: list[dict[str, Any]] = []
    models: list[dict[str, Any]] = []
    for name, trace in real.items():
        T = min(tokens, trace.n_tokens)
        t0 = time.perf_counter()
        real_fig = replay_figures(trace, T, warmup)
        t1 = time.perf_counter()
        meta = {"model": f"synth-loo:{name}", "bytes_per_weight": float(trace.meta["bytes_per_weight"]),
                "weight_dtype": str(trace.meta.get("weight_dtype", "")), "activation": "silu",
                "architecture": "synthetic"}
        synth = generate_trace(fit.without(name), trace.n_layers, trace.d_model, trace.d_ff, T, seed=seed, meta=meta)
        t2 = time.perf_counter()
        syn_fig = replay_figures(synth, T, warmup)
        t3 = time.perf_counter()
        for r, s in zip(real_fig["rows"], syn_fig["rows"]):
            fb_r, fb_s = r["flash_bytes_per_token"], s["flash_bytes_per_token"]
            rows.append({"model": name, "policy": policy_label(r["masking"], r["gamma"]), "masking": r["masking"],
                         "gamma": r["gamma"], "dram_fraction": r["dram_fraction"], "real": r["hit_rate"],
                         "synth": s["hit_rate"], "error": s["hit_rate"] - r["hit_rate"],
                         "flash_real": fb_r, "flash_synth": fb_s,
                         "flash_rel_error": (fb_s - fb_r) / fb_r if fb_r else 0.0})
        stats = stats_compare(trace, synth, T)
        mrc_err = np.abs(np.array(syn_fig["mrc"]) - np.array(real_fig["mrc"]))
        mine = [r for r in rows if r["model"] == name]
        models.append({"model": name, "n_layers": trace.n_layers, "d_model": trace.d_model, "d_ff": trace.d_ff,
                       "tokens": T, "fitted_on": [m for m in fit.names if m != name],
                       "hit_rate_abs_error_max": max(abs(r["error"]) for r in mine),
                       "hit_rate_abs_error_mean": float(np.mean([abs(r["error"]) for r in mine])),
                       "mrc_abs_error_max": float(mrc_err.max()),
                       "mrc_real": real_fig["mrc"], "mrc_synth": syn_fig["mrc"],
                       "flash_rel_error_max": max(abs(r["flash_rel_error"]) for r in mine),
                       "stats": stats,
                       "seconds": {"replay_real": t1 - t0, "generate": t2 - t1, "replay_synth": t3 - t2}})
        say(f"{name}: max |hit-rate error| {models[-1]['hit_rate_abs_error_max']:.4f}, MRC {mrc_err.max():.4f} "
            f"({t3 - t0:.0f} s)")
    return {"method": "leave-one-model-out", "tokens": tokens, "warmup": warmup, "seed": seed, "keep": KEEP,
            "cache": "lru", "rows": rows, "models": models, "summary": summarize(rows, models, tokens, warmup, seed)}


def stats_compare(real: Trace, synth: Trace, tokens: int, depths=(0.0, 0.25, 0.5, 0.75, 1.0)) -> list[dict[str, Any]]:
    """Top-k overlap at lags 1, 8, 64, mean run length in the top-k and static overlap (keep 0.5),
    real beside synthetic, at a few relative depths (all layers would double the validation time)."""
    out = []
    layers = sorted({round(d * (real.n_layers - 1)) for d in depths})
    for layer in layers:
        for kind in ("x", "h"):
            a = compare_stats(real.abs_layer(kind, layer, 0, tokens), KEEP)
            b = compare_stats(synth.abs_layer(kind, layer, 0, tokens), KEEP)
            out.append({"layer": layer, "group": kind, **{f"{k}_real": _num(v) for k, v in a.items()},
                        **{f"{k}_synth": _num(v) for k, v in b.items()}})
    return out


def _num(v: float) -> float | None:
    """Rounded, or None where a statistic is undefined (a lag longer than the trace): JSON has no NaN."""
    return round(float(v), 4) if np.isfinite(v) else None


def summarize(rows: list[dict[str, Any]], models: list[dict[str, Any]], tokens: int, warmup: int,
              seed: int) -> dict[str, Any]:
    """The validation error in the form a synthetic trace's metadata carries (``meta["synth"]["validation"]``):
    overall maxima, and per (masking, gamma, budget) the max and mean |error| and each model's signed error."""
    by_config = []
    for masking, gamma in POLICIES:
        for budget in BUDGETS:
            mine = [r for r in rows if r["masking"] == masking and r["gamma"] == gamma and r["dram_fraction"] == budget]
            if not mine:
                continue
            by_config.append({"masking": masking, "gamma": gamma, "keep": KEEP, "dram_fraction": budget, "cache": "lru",
                              "hit_rate_abs_error_max": max(abs(r["error"]) for r in mine),
                              "hit_rate_abs_error_mean": float(np.mean([abs(r["error"]) for r in mine])),
                              "flash_rel_error_max": max(abs(r["flash_rel_error"]) for r in mine),
                              "errors": {r["model"]: round(r["error"], 5) for r in mine}})
    widths = [m["d_model"] for m in models]
    return {"method": "leave-one-model-out", "tokens": tokens, "warmup": warmup, "seed": seed,
            "held_out": [m["model"] for m in models],
            "hit_rate_abs_error_max": max((abs(r["error"]) for r in rows), default=float("nan")),
            "hit_rate_abs_error_mean": float(np.mean([abs(r["error"]) for r in rows])) if rows else float("nan"),
            "mrc_abs_error_max": max((m["mrc_abs_error_max"] for m in models), default=float("nan")),
            "flash_rel_error_max": max((abs(r["flash_rel_error"]) for r in rows), default=float("nan")),
            "by_config": by_config,
            "by_model": [{"model": m["model"], "hit_rate_abs_error_max": m["hit_rate_abs_error_max"],
                          "mrc_abs_error_max": m["mrc_abs_error_max"], "flash_rel_error_max": m["flash_rel_error_max"]}
                         for m in models],
            "rows": [{"model": r["model"], "masking": r["masking"], "gamma": r["gamma"],
                      "dram_fraction": r["dram_fraction"], "real": round(r["real"], 5), "synth": round(r["synth"], 5),
                      "flash_rel_error": round(r["flash_rel_error"], 5)} for r in rows],
            "scope": (f"measured on held-out models of d_model {min(widths)}-{max(widths)}, "
                      f"{min(m['n_layers'] for m in models)}-{max(m['n_layers'] for m in models)} layers; "
                      f"beyond that range the error is carried over, not measured") if models else ""}


# ------------------------------------------------------------------- printing
def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The full table: one row per held-out model x policy x budget."""
    return [{"held_out": r["model"], "policy": r["policy"], "budget": f"{r['dram_fraction']:.0%}",
             "real": round(r["real"], 4), "synth": round(r["synth"], 4), "error": round(r["error"], 4),
             "flash_KB/tok_real": round(r["flash_real"] / 1e3, 1),
             "flash_KB/tok_synth": round(r["flash_synth"] / 1e3, 1),
             "flash_rel_err": f"{r['flash_rel_error']:+.1%}"} for r in result["rows"]]


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per held-out model: the compact version (the README's)."""
    out = []
    for m in result["models"]:
        mine = [r for r in result["rows"] if r["model"] == m["model"]]
        cells = {f"{r['policy']} @{r['dram_fraction']:.0%}": f"{r['real']:.3f}/{r['synth']:.3f}" for r in mine}
        out.append({"held_out": m["model"], **cells, "max abs err": round(m["hit_rate_abs_error_max"], 4),
                    "MRC max abs err": round(m["mrc_abs_error_max"], 4),
                    "flash max abs rel err": f"{m['flash_rel_error_max']:.1%}"})
    return out


# ------------------------------------------------------------------ the error an extrapolated point carries
def point_error(validation: dict[str, Any] | None, masking: str, gamma: float | None, keep: Any, cache: str,
                dram_fraction: float) -> tuple[float | None, str]:
    """The hit-rate error to read a synthetic trace's point with: ``(abs error, where it comes from)``.

    The validation measured (masking, gamma) x budget at keep 0.5 with LRU. A point of a validated
    configuration takes the larger error of the two validated budgets around its own (the nearest
    one at the ends); any other point takes the largest error of the whole validation. ``None``
    when the fit was not validated."""
    if not validation:
        return None, "not validated"
    def same_gamma(g: float | None) -> bool:
        return g is None and gamma is None or g is not None and gamma is not None and abs(g - gamma) < 1e-9

    rows = [r for r in validation.get("by_config", []) if r["masking"] == masking and r["cache"] == cache
            and r["keep"] == keep and same_gamma(r["gamma"])]
    if not rows:
        return float(validation["hit_rate_abs_error_max"]), "largest validated error (configuration not validated)"
    rows.sort(key=lambda r: r["dram_fraction"])
    below = [r for r in rows if r["dram_fraction"] <= dram_fraction + 1e-9]
    above = [r for r in rows if r["dram_fraction"] >= dram_fraction - 1e-9]
    around = [x for x in (below[-1] if below else None, above[0] if above else None) if x is not None]
    exact = any(abs(r["dram_fraction"] - dram_fraction) < 1e-9 for r in around)
    return (max(float(r["hit_rate_abs_error_max"]) for r in around),
            "validated configuration" if exact else "validated configuration, nearest budgets")


def error_columns(validation: dict[str, Any] | None, config: dict[str, Any], fraction: float,
                  totals: dict[str, Any], engine: dict[str, Any] | None) -> dict[str, Any]:
    """The columns a sweep row over a synthetic trace carries: the hit-rate error, the hit rate and
    (with a device) tokens/s it bounds. Flash bytes are ``(1 - hit rate)`` of the selected bytes, so
    a hit-rate error e moves them by ``e / (1 - h)`` relative; the time per token moves by at most
    that share of its flash time."""
    gamma = config.get("gamma") if config.get("masking") == "dip-ca" else None
    err, source = point_error(validation, str(config.get("masking")), gamma, config.get("keep"),
                              str(config.get("cache")), fraction)
    out: dict[str, Any] = {"synth_hit_rate_error": err, "synth_error_from": source}
    if err is None:
        return out
    h = float(totals["hit_rate"])
    out["hit_rate_low"], out["hit_rate_high"] = max(h - err, 0.0), min(h + err, 1.0)
    if engine and engine.get("tokens_per_s") and h < 1.0:
        lat = 1000.0 / float(engine["tokens_per_s"])
        flash = float(engine.get("flash_ms_per_token") or 0.0)
        # misses are (1 - h) of the selected bytes; the hit rate stays within [0, 1]
        more, fewer = (h - out["hit_rate_low"]) / (1.0 - h), (out["hit_rate_high"] - h) / (1.0 - h)
        out["tokens_per_s_low"] = 1000.0 / (lat + more * flash)
        out["tokens_per_s_high"] = 1000.0 / max(lat - fewer * flash, 1e-9)
    return out
