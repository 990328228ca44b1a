"""``dipsim synth``: synthetic traces of models too large to run here, from a model fitted to real traces.

    dipsim synth --like phi3-medium --tokens 1024 --out phi3m.safetensors
    dipsim synth validate --trace-dir traces-real [--tokens 512] [--format table|json|markdown]
    dipsim synth fit --traces a.safetensors b.safetensors ... --out fit.json

``add_parser(subparsers)`` adds the verb, ``run(args)`` runs it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from common.errors import DipsimError
from common.tables import markdown_table, print_table

from .options import add_verb, arg_type, positive_int, seed, workers

HELP = """\
Generate a synthetic trace of a model too large to trace on this machine, from a statistical model
fitted to real traces (traces/synth/NOTES.md): per layer and group, columns with a heavy-tailed
importance, a per-token distribution around it and a temporal persistence (a fast and a slow
autoregressive part; large values persist, small ones do not), all as functions of relative depth,
averaged over the fitted models.

The trace's metadata records the fit (models, digest) and its leave-one-model-out validation
error (meta["synth"]["validation"]): how far LRU hit rates of a trace generated without a real
model were from that model's own trace. Read extrapolated numbers with that error beside them.

  dipsim synth --like phi3-medium --tokens 1024 --out phi3m.safetensors
  dipsim synth validate --trace-dir DIR      leave-one-model-out table on real traces in DIR
  dipsim synth fit --traces A B C D --out fit.json   refit (and validate) from real traces

Models (--like): {presets}. Weight formats (--weight-format): {formats}, or bytes per weight.
"""

VALIDATE_HELP = """\
Leave-one-model-out: for each real trace, fit on the other models of --fit, generate a trace of
the held-out model's geometry and replay both: LRU hit rate at 25/50/75% of the MLP in DRAM for
dip keep 0.5 and dip-ca gamma 0.5 and 0.2, flash bytes per token, and the dip LRU miss-ratio
curve. Real traces: --traces FILE..., or the files named MODEL-TOKENS.safetensors in --trace-dir
(default $DIPSIM_REAL_TRACES, else ./traces-real), e.g. made with
  dipsim trace --model smollm2-135m --tokens 1024 --out traces-real/smollm2-135m-1024.safetensors
A few minutes for the four models at 1024 tokens on a 2-core machine; --tokens 512 halves it.
"""

FIT_HELP = """\
Measure real traces (one per model, with h) and write the fit as JSON; unless --no-validate, also
run the leave-one-model-out validation on the same traces and store its summary in the fit, from
where every synthetic trace's metadata copies it. The fit shipped with dipsim
(traces/synth/fit.json) was made this way from SmolLM2-135M, Gemma-3-270M, Qwen2.5-0.5B and
Qwen2.5-Coder-1.5B, 1024 tokens each of the default corpus.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``synth`` (generate) with its ``fit`` and ``validate`` sub-verbs; returns its parser."""
    from traces.synth.presets import PRESETS, WEIGHT_FORMATS

    s = add_verb(subparsers, "synth", run, "synthetic traces of 7B-14B models from a model fitted to real traces",
                 description=HELP.format(presets=", ".join(PRESETS), formats=", ".join(WEIGHT_FORMATS)),
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--like", metavar="NAME", help=f"model geometry to generate: {', '.join(PRESETS)}")
    s.add_argument("--tokens", type=positive_int, default=1024, metavar="N", help="tokens to generate (default 1024)")
    s.add_argument("--out", metavar="FILE", help="trace file to write (.safetensors)")
    s.add_argument("--seed", type=seed, default=0, metavar="S", help="random seed (default 0); same seed, same trace")
    s.add_argument("--weight-format", metavar="F",
                   help="bytes per weight for MLP and static weights: a format name or a number (default: the "
                        "preset's, Q4_K = 0.5625 B)")
    s.add_argument("--fit", metavar="FILE", help="fit to generate from (default: the one shipped with dipsim)")
    s.add_argument("--threads", type=workers, default=2, metavar="N", help="generation threads (default 2)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = s.add_subparsers(dest="synth_command", metavar="{fit,validate}")

    v = sub.add_parser("validate", help="leave-one-model-out validation table on real traces",
                       description=VALIDATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("--fit", dest="fit_file", metavar="FILE",
                   help="fit holding the models' statistics (default: the shipped one)")
    v.add_argument("--traces", nargs="+", metavar="FILE", help="real traces, one per model of the fit")
    v.add_argument("--trace-dir", metavar="DIR", help="folder of MODEL-TOKENS.safetensors real traces "
                                                      "(default $DIPSIM_REAL_TRACES or ./traces-real)")
    v.add_argument("--tokens", dest="val_tokens", type=positive_int, metavar="N",
                   help="tokens replayed per trace (default 1024 or the real traces' length if shorter)")
    v.add_argument("--seed", dest="val_seed", type=seed, default=0, metavar="S",
                   help="seed of the synthetic traces (default 0)")
    v.add_argument("--warmup", type=arg_type(int, lambda w: w >= 0, "a whole number >= 0"), default=16, metavar="N",
                   help="tokens left out of the hit rates (default 16)")
    v.add_argument("--format", choices=["table", "json", "markdown"], default="table", help="output (default table)")
    v.add_argument("--save-fit", metavar="FILE", help="also write the fit with this validation stored in it (.json)")
    v.add_argument("-q", "--quiet", dest="val_quiet", action="store_true", help="no progress lines")

    f = sub.add_parser("fit", help="measure real traces and write a fit (JSON)", description=FIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--traces", nargs="+", required=True, metavar="FILE", help="real traces (with h), one per model")
    f.add_argument("--out", dest="fit_out", required=True, metavar="FILE", help="fit to write (.json)")
    f.add_argument("--tokens", dest="fit_tokens", type=positive_int, metavar="N",
                   help="measure the first N tokens (default all)")
    f.add_argument("--no-validate", action="store_true", help="skip the leave-one-model-out validation")
    f.add_argument("--validate-tokens", type=positive_int, metavar="N",
                   help="tokens replayed by the validation (default 1024 or the traces' length if shorter)")
    f.add_argument("-q", "--quiet", dest="fit_quiet", action="store_true", help="no progress lines")
    return s


def run(a: argparse.Namespace) -> int:
    cmd = getattr(a, "synth_command", None)
    if cmd == "validate":
        return _run_validate(a)
    if cmd == "fit":
        return _run_fit(a)
    return _run_generate(a)


def _log(quiet: bool):
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


# ------------------------------------------------------------------ generate
def _run_generate(a: argparse.Namespace) -> int:
    import time

    from common.io import check_outputs
    from traces import load, synth

    if not a.like:
        raise DipsimError(f"--like is required: the model geometry to generate ({', '.join(synth.PRESETS)}); "
                          f"or a sub-command: fit, validate")
    if not a.out:
        raise DipsimError("--out is required: the trace file to write (.safetensors)")
    synth.presets.get(a.like)
    if a.weight_format is not None:
        synth.presets.weight_format_bytes(a.weight_format)
    check_outputs([("--out", a.out, (".safetensors",))], [("--fit", a.fit)])
    fit = synth.Fit.load(a.fit)
    t0 = time.perf_counter()
    path = synth.like(a.like, a.tokens, a.out, seed=a.seed, weight_format=a.weight_format, fit=fit,
                      threads=a.threads, progress=not a.quiet)
    dt = time.perf_counter() - t0
    t = load(path, check_finite=False)
    val = (t.meta["synth"].get("validation") or {})
    err = val.get("hit_rate_abs_error_max")
    print(f"wrote {path}: {t.n_layers} layers, d_model {t.d_model}, d_ff {t.d_ff}, {t.n_tokens} tokens "
          f"({t.meta['model']}, {t.meta['weight_dtype']} = {t.meta['bytes_per_weight']:.4g} B/weight) in {dt:.1f} s")
    print(f"fit {fit.digest()} from {', '.join(fit.names)}; " +
          (f"leave-one-model-out hit-rate error up to {err:.3f} (absolute; see meta['synth']['validation'])"
           if err is not None else "the fit carries no validation: its error is unknown"))
    return 0


# ------------------------------------------------------------------ validate
def _real_traces(a: argparse.Namespace, fit) -> dict[str, Any]:
    from traces import load

    real: dict[str, Any] = {}
    if a.traces:
        for p in a.traces:
            t = load(p)
            name = str(t.meta["model"])
            if name not in fit.names:
                raise DipsimError(f"--traces {p}: model {name!r} is not in the fit; fitted: {', '.join(fit.names)}")
            if name in real:
                raise DipsimError(f"--traces {p}: a second trace of model {name!r}; give one per model")
            real[name] = t
        return real
    folder = Path(a.trace_dir or os.environ.get("DIPSIM_REAL_TRACES") or "traces-real")
    if not folder.is_dir():
        raise DipsimError(f"--trace-dir {folder}: not a folder; give the folder of real traces or --traces FILE ...")
    for m in fit.models:
        candidates = [folder / f"{m.model}-{m.n_tokens}.safetensors"] + sorted(folder.glob(f"{m.model}-*.safetensors"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            real[m.model] = load(found)
    if not real:
        first = fit.models[0]
        raise DipsimError(f"--trace-dir {folder}: no real trace of any fitted model ({', '.join(fit.names)}); make "
                          f"one with: dipsim trace --model {first.model} --tokens {first.n_tokens} --out "
                          f"{folder / (first.model + '-' + str(first.n_tokens) + '.safetensors')}")
    return real


def _run_validate(a: argparse.Namespace) -> int:
    from common.io import check_outputs
    from traces.synth import Fit

    from .. import synth_validation as validate

    check_outputs([("--save-fit", a.save_fit, (".json",))], [("--fit", a.fit_file)] +
                  [("--traces", t) for t in a.traces or []])
    fit = Fit.load(a.fit_file)
    if len(fit.models) < 2:
        raise DipsimError("the fit holds one model: leave-one-model-out needs at least two")
    real = _real_traces(a, fit)
    tokens = validate.validation_tokens(real, a.val_tokens, a.warmup, "--tokens")
    result = validate.validate(fit, real, tokens=tokens, warmup=a.warmup, seed=a.val_seed, log=_log(a.val_quiet))
    if a.save_fit:
        fit.validation = result["summary"]
        fit.save(a.save_fit)
    _print_result(result, a.format)
    return 0


def _print_result(result: dict[str, Any], fmt: str) -> None:
    from .. import synth_validation as validate

    if fmt == "json":
        print(json.dumps(result, indent=1))
        return
    full, compact = validate.table_rows(result), validate.summary_rows(result)
    if fmt == "markdown":
        print(markdown_table(full) + "\n\n" + markdown_table(compact))
        return
    s = result["summary"]
    print(f"leave-one-model-out, {result['tokens']} tokens, keep {result['keep']}, LRU, hit rates by bytes after "
          f"{result['warmup']} warm-up tokens (real / synthetic)")
    print_table(full, floatfmt="{}")
    print()
    print_table(compact, floatfmt="{}")
    print(f"\nmax |hit-rate error| {s['hit_rate_abs_error_max']:.4f} (mean {s['hit_rate_abs_error_mean']:.4f}); "
          f"MRC max |error| {s['mrc_abs_error_max']:.4f}; flash bytes/token max |relative error| "
          f"{s['flash_rel_error_max']:.1%}")



# ------------------------------------------------------------------ fit
def _run_fit(a: argparse.Namespace) -> int:
    from common.io import check_outputs
    from traces import load
    from traces.synth import fit_traces

    from .. import synth_validation as validate

    check_outputs([("--out", a.fit_out, (".json",))], [("--traces", t) for t in a.traces])
    loaded = [load(p) for p in a.traces]
    log = _log(a.fit_quiet)
    real = {str(t.meta["model"]): t for t in loaded}
    if not a.no_validate:
        if len(loaded) < 2:
            raise DipsimError("validation needs at least two models (leave one out); add traces or --no-validate")
        tokens = validate.validation_tokens(real, a.validate_tokens, 16, "--validate-tokens")
    fit = fit_traces(loaded, a.fit_tokens, log=log)
    if not a.no_validate:
        result = validate.validate(fit, real, tokens=tokens, log=log)
        fit.validation = result["summary"]
        _print_result(result, "table")
    fit.save(a.fit_out)
    print(f"wrote {a.fit_out}: fit {fit.digest()} of {', '.join(fit.names)}"
          + ("" if a.no_validate else f"; validation stored (max |hit-rate error| "
                                      f"{fit.validation['hit_rate_abs_error_max']:.4f})"))
    return 0


# ------------------------------------------------------------------ standalone
