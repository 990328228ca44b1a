"""``dipsim eval``: closed-loop accuracy of configurations on a real model."""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

from common.errors import DipsimError
from common.tables import print_table

from common.params import params_of

from .. import masking
from ..accuracy import evaluate
from ..config import DEFAULT_DRAM_FRACTION, AccuracyRun, MmluTask, ReplayConfig, TraceSpec, masking_parameter_names
from .options import (add_config_options, add_corpus_options, add_masking_parameter_options, add_verb, corpus_options,
                      flag, given)

EVAL_HELP = """\
Run the real model with masking and a DRAM cache inside its forward pass (closed loop) and report
perplexity, KL divergence and top-1 agreement to the dense model, the closed-loop hit rate and
flash bytes per token, and beside them the open-loop hit rate (replay of the dense trace of the
same tokens with the same configuration).

Each configuration runs one parallel forward of the text in which every MLP masks all positions
of its layer at once, the policy and caches stepped through the tokens in order (--loop layer, the
default; --loop token runs the token-by-token reference). The configurations are the product of
the repeatable options --masking, --gamma, --keep, --cache and --dram-fraction (a masking parameter
such as --gamma joins only the policies that take it); the other options apply to all. Or list them
with --config: a JSON or YAML mapping or list of mappings, inline or as a file, e.g.
  --config '{"masking": "dip", "keep": 0.75}'  --config sweep.yaml
with the keys masking, the masking policy's parameters (gamma, fixed_top_n, seed, ...; flat or
under masking_params), keep, keep_up, keep_gate, keep_down, cache, cache_params, allocation,
allocation_params, dram_fraction, dram_bytes, weight_format, label; options given once fill in
what an entry leaves out. A one-point experiment file (dipsim optimize's best.yaml) as --config
runs its point as its sweep does: its model, tokens, text, prefix token, warm-up and calibration
prefix (no --model or run option beside it). Without either, one configuration runs: {DEFAULT}.
Results are cached on disk (--no-reuse to recompute).

Tokens: the prefix token (--prefix-token; default auto, the model's own convention: none for
SmolLM2 and Qwen2.5, <bos> for Gemma-3) + the first --tokens text tokens, one context window.
Position 0 (the attention sink: the prefix token, or the first text token) and the --prefill text
tokens run densely as the prompt; every token after the prompt is scored (perplexity = exp(mean
NLL)), its first prediction coming from the prompt, so the dense perplexity is the model's own
loss-based perplexity on the sequence. Example:
  dipsim eval --tokens 1024 --masking dip-ca --gamma 1 --gamma 0.5 --gamma 0.2 --keep 0.5

--task mmlu answers multiple-choice questions instead (the installed MMLU test set, python3 tasks.py
data mmlu, or --questions FILE): lm-eval-harness's MMLU prompt (--shots worked examples of the same
topic), --questions-per-topic questions of every topic (fixed seed), each answered by the letter
" A".." D" of highest log-probability after "Answer:". Every position after the first runs with the
configuration's masks and caches, the cache carried from one question to the next (--reset-cache
true: a fresh cache per question). It reports the accuracy with its Wilson 95% interval and, for a
configuration that prunes, the paired difference to the dense model on the same questions with its
95% interval (bootstrap over questions) and McNemar's exact p-value. The dense pass's answers are
stored: a later run with the same options whose configurations all prune reuses them instead of a
second dense pass. Example:
  dipsim eval --model qwen2.5-0.5b --task mmlu --questions-per-topic 10 --masking dense --masking dip
"""


#: options that may repeat: the configurations are their product
REPEAT = ("masking", "keep", "cache", "dram_fraction", "gamma")
#: the most configurations one eval runs (each runs the model once), counted before they are built
MAX_CONFIGS = 1000


def _check_count(n: int, what: str) -> None:
    if n > MAX_CONFIGS:
        raise DipsimError(f"{what} make {n:,} configurations; eval runs at most {MAX_CONFIGS:,} (each runs the "
                          f"model once): split the run, or sweep the parameters with dipsim sweep")


def _default_text() -> str:
    d = ReplayConfig()
    return (f"{d.masking}, keep {d.keep}, {d.cache}, the DRAM budget dram_fraction {DEFAULT_DRAM_FRACTION} of "
            f"the MLP weights, {d.allocation} allocation")


def add_parser(sub) -> None:
    s = add_verb(sub, "eval", run, "closed-loop accuracy: perplexity, KL to dense, closed- vs open-loop hit rate",
                 description=EVAL_HELP.replace("{DEFAULT}", _default_text()), formatter_class=argparse.RawDescriptionHelpFormatter)
    model = next(f for f in params_of(TraceSpec) if f.name == "model")
    real = model.metadata["help"].split(", or synth:")[0]    # a synthetic trace has no model to run
    s.add_argument("--model", help=f"{real} (default {model.default})")
    add_config_options(s, AccuracyRun, title="the run")
    add_config_options(s, MmluTask, title="the mmlu task (--task mmlu)")
    add_config_options(s, ReplayConfig, title="configurations (options marked repeatable run as a product)",
                       skip=("tokens",), repeat=REPEAT)
    add_masking_parameter_options(s, repeat=REPEAT)
    s.add_argument("--config", action="append", metavar="JSON|YAML|FILE",
                   help="configuration(s) as a JSON/YAML mapping or list, inline or in a file (repeatable)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    s.add_argument("--no-reuse", action="store_true", help="recompute, and neither read nor write the result store")
    s.add_argument("--batched-gemm", action="store_true",
                   help="--loop token only: decode with batched GEMMs: ~1.5x faster, but each configuration's "
                        "figures then depend in the last bits on the batch it ran in (default: row by row)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_corpus_options(s)


def _parse_config_arg(text: str) -> list[dict[str, Any]]:
    """The configurations of one ``--config``: inline JSON/YAML, or a .json/.yaml/.yml file (or any
    existing file); plain data only (``common.plainyaml``), at least one mapping."""
    from common import plainyaml
    from common.io import input_file

    where = "--config"
    if text.lower().endswith((".json", ".yaml", ".yml")) or _names_a_file(text):
        data = plainyaml.read(input_file(text, "--config file"), "--config file", max_bytes=1 << 20)
        where = text
    else:
        data = plainyaml.load(text, where)  # JSON is YAML
    if isinstance(data, dict) and isinstance(data.get("configs"), list):
        data = data["configs"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise DipsimError(f"{where}: expected a mapping or a list of mappings (configurations)")
    if not data:
        raise DipsimError(f"{where}: an empty list: give at least one configuration")
    return data


def _names_a_file(text: str) -> bool:
    """Whether ``--config TEXT`` names an existing file (inline JSON or YAML never does)."""
    if len(text) >= 4096 or "\n" in text or not text.strip():
        return False
    try:
        return os.path.lexists(text)
    except (OSError, ValueError):       # a name too long for the file system: inline text
        return False


#: ReplayConfig options that belong to the run (every configuration shares them), not to a configuration
RUN_KEYS = ("tokens", "warmup", "calib_tokens")


def _takes(name: str) -> set[str]:
    """The parameters masking policy ``name`` takes (none for an unknown name, which its own check names)."""
    return set(masking.parameters(name)) if name in masking.names() else set()


def _with_defaults(entry: dict[str, Any], single: dict[str, Any], mparams: dict[str, Any]) -> dict[str, Any]:
    """A --config entry with the single-valued command-line options filling what it does not set (a
    masking parameter only where the entry's policy takes it)."""
    c = {**single, **entry}
    takes = _takes(c.get("masking", ReplayConfig.masking))
    c.update({k: v for k, v in mparams.items() if k in takes and k not in entry})
    return c


def configs_from_args(a: argparse.Namespace) -> list[dict[str, Any]]:
    """The configurations an ``eval`` command line asks for. Without ``--config``: the product of the
    repeatable options (a masking parameter joins only the policies that take it), the single-valued
    ones applied to all. With ``--config``: its entries, each filled in by the options given once;
    an option given several times is refused there (list the configurations in --config instead)."""
    extra = []
    for text in a.config or []:
        extra += _parse_config_arg(text)
    single = {k: v for k, v in given(a, ReplayConfig).items() if k not in RUN_KEYS}
    mparams = given(a, ReplayConfig, names=masking_parameter_names())
    if extra:
        many = [k for k, v in {**single, **mparams}.items() if k in REPEAT and len(v) > 1]
        if many:
            raise DipsimError(f"{flag(many[0])} is given {len(({**single, **mparams})[many[0]])} times beside "
                              f"--config: with --config, list each configuration there (options given once fill "
                              f"in what its entries leave out)")
        single = {k: (v[0] if k in REPEAT else v) for k, v in single.items()}
        mparams = {k: (v[0] if k in REPEAT else v) for k, v in mparams.items()}
        names = [e.get("masking", ReplayConfig.masking) for e in extra]
        takes = [_takes(m) for m in names if m in masking.names()]
        for k in mparams:
            if takes and not any(k in t for t in takes):
                raise DipsimError(f"{flag(k)}: none of the --config masking policies ({', '.join(names)}) takes it")
        _check_count(len(extra), "--config entries")
        return [_with_defaults(e, single, mparams) for e in extra]
    axes = {k: single.pop(k) for k in REPEAT if k in single}
    axes.update({k: mparams.pop(k) for k in REPEAT if k in mparams})
    names = axes.pop("masking", [ReplayConfig.masking])
    policy_axes = {k: v for k, v in axes.items() if k in masking_parameter_names()}
    other_axes = {k: v for k, v in axes.items() if k not in policy_axes}
    takes = {m: _takes(m) for m in names if m in masking.names()}
    for k in list(policy_axes) + list(mparams):
        if not any(k in t for t in takes.values()):
            raise DipsimError(f"{flag(k)}: none of the masking policies asked for ({', '.join(names)}) takes it")
    _check_count(sum(math.prod(len(v) for k, v in axes.items() if k in other_axes or k in takes.get(m, ()))
                     for m in names), "the repeated options")
    out, seen = [], set()
    for m in names:
        mine = {k: v for k, v in policy_axes.items() if k in takes.get(m, ())}
        for combo in itertools.product(*other_axes.values(), *mine.values()):
            c = {"masking": m, **single, **dict(zip(list(other_axes) + list(mine), combo))}
            c.update({k: v for k, v in mparams.items() if k in takes.get(m, ())})
            key = json.dumps(c, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


def _interval(r: dict[str, Any], name: str, fmt: str = "{:.4g}") -> str | None:
    lo, hi = r.get(f"{name}_low"), r.get(f"{name}_high")
    return None if lo is None or hi is None else f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def _diff(r: dict[str, Any], name: str, fmt: str) -> str | None:
    """``+0.012 [-0.003, +0.027]``, a ``*`` after it when the interval excludes 0."""
    from ..accuracy.intervals import significant

    d = r.get(f"{name}_diff")
    if d is None:
        return None
    star = "*" if significant(r.get(f"{name}_diff_low"), r.get(f"{name}_diff_high")) else ""
    return f"{fmt.format(d)} {_interval(r, name + '_diff', fmt)}{star}"


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"configuration": r["label"], "perplexity": r["perplexity"], "95% interval": _interval(r, "perplexity"),
             "vs dense": _diff(r, "perplexity", "{:+.3g}"), "kl_to_dense": r["kl_to_dense"],
             "top1_agreement": r["top1_agreement"], "closed_loop_hit_rate": r["closed_loop_hit_rate"],
             "open_loop_hit_rate": r["open_loop_hit_rate"],
             "closed_loop_flash_bytes_per_token": r["closed_loop_flash_bytes_per_token"],
             "open_loop_flash_bytes_per_token": r["open_loop_flash_bytes_per_token"]} for r in results]


def mmlu_table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"configuration": r["label"], "mmlu_accuracy": r["mmlu_accuracy"],
             "95% interval": _interval(r, "mmlu_accuracy", "{:.3f}"),
             "vs dense": _diff(r, "mmlu_accuracy", "{:+.3f}"), "mcnemar_p": r.get("mmlu_mcnemar_p"),
             "mmlu_hit_rate": r["mmlu_hit_rate"]} for r in results]


def _run_mmlu(a: argparse.Namespace, configs: list[dict[str, Any]], run_cfg: AccuracyRun, calib_tokens: int) -> int:
    from ..accuracy import evaluate_mmlu

    task = MmluTask.from_mapping(given(a, MmluTask), "command line")
    text_only = [flag(k) for k in given(a, AccuracyRun, names=("tokens", "prefill", "loop"))]
    text_only += [flag(k) for k in ("text", "dataset") if getattr(a, k, None)]
    if text_only or a.batched_gemm:
        raise DipsimError(f"{(text_only or ['--batched-gemm'])[0]} belongs to the text task; --task mmlu runs the "
                          f"questions' prompts (see --questions, --questions-per-topic, --shots)")
    results = evaluate_mmlu(a.model, configs, **task.kwargs(), calib_tokens=calib_tokens,
                            prefix_token=run_cfg.prefix_token, reuse=not a.no_reuse, progress=not a.quiet)
    if a.format == "json":
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2, default=str))
        return 0
    from traces.prefix import label

    r0 = results[0]
    print(f"{r0['model']}: MMLU, {r0['mmlu_questions']} questions of {r0['questions']} ({r0['shots']}-shot, prefix "
          f"token {label(r0['prefix_token'])}, cache {'reset per question' if r0['reset_cache'] else 'carried across questions'}); "
          f"dense accuracy {r0['mmlu_dense_accuracy']:.3f}; intervals 95%, * where the difference to dense excludes 0")
    print_table(mmlu_table_rows(results))
    return 0


def _is_experiment(text: str) -> bool:
    """Whether a --config names an experiment file (a mapping with ``base``), not configurations."""
    from common import plainyaml

    p = Path(text)
    if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file():
        return False
    try:
        data = plainyaml.read(p, "--config file", max_bytes=1 << 20)
    except DipsimError:
        return False        # _parse_config_arg reads it again and says what is wrong
    return isinstance(data, dict) and "base" in data


def _point_run(a: argparse.Namespace) -> tuple[str, list[dict[str, Any]], dict[str, Any]] | None:
    """With a one-point experiment as --config: its model, configuration and run options, as its sweep
    point runs them (``sweep.execute.accuracy_run``); None without one."""
    files = [t for t in a.config or [] if _is_experiment(t)]
    if not files:
        return None
    from ..sweep import load_point, trace_for
    from ..sweep.execute import accuracy_config, accuracy_run, resolved

    beside = (["--config"] if len(a.config) > 1 else []) + (["--model"] if a.model else []) + [
        flag(k) for k in {**given(a, ReplayConfig), **given(a, AccuracyRun), **given(a, MmluTask),
                          **given(a, ReplayConfig, names=masking_parameter_names())}]
    if beside:
        raise DipsimError(f"{beside[0]}: --config {files[0]} is a one-point experiment that sets the model and the "
                          f"run; give it alone")
    cfg = load_point(files[0]).config
    trace_for(cfg.trace, progress=not a.quiet)
    cfg = resolved(cfg)
    model, kw = accuracy_run(cfg)
    return model, [accuracy_config(cfg)], kw


def run(a: argparse.Namespace) -> int:
    """The ``eval`` subcommand: evaluate the configurations and print a table or JSON."""
    from traces.models import check_available

    point = _point_run(a)
    if point is not None:
        model, configs, kw = point
        return _print(a, evaluate(model, configs, reuse=not a.no_reuse, progress=not a.quiet, **kw))
    a.model = a.model or TraceSpec.model
    if str(a.model).startswith("synth:"):
        raise DipsimError(f"--model {a.model}: a synthetic trace has no model to run in the loop; eval needs a real "
                          f"model (see --help)")
    check_available(a.model)
    configs = configs_from_args(a)
    run_cfg = AccuracyRun.from_mapping(given(a, AccuracyRun), "command line")
    if a.batched_gemm and run_cfg.loop != "token":
        raise DipsimError(f"--batched-gemm applies to --loop token only (this run: --loop {run_cfg.loop})")
    rc = ReplayConfig.from_mapping({k: v for k, v in given(a, ReplayConfig, names=("warmup", "calib_tokens")).items()},
                                   "command line")
    if run_cfg.task == "mmlu":
        return _run_mmlu(a, configs, run_cfg, rc.calib_tokens)
    extra = [flag(k) for k in given(a, MmluTask)]
    if extra:
        raise DipsimError(f"{extra[0]} belongs to the mmlu task; add --task mmlu (this run: --task text)")
    results = evaluate(a.model, configs, **corpus_options(a),
                       tokens=run_cfg.tokens, prefill=run_cfg.prefill, warmup=rc.warmup, calib_tokens=rc.calib_tokens,
                       loop=run_cfg.loop, reuse=not a.no_reuse, progress=not a.quiet,
                       batch_invariant=not a.batched_gemm, prefix_token=run_cfg.prefix_token)
    return _print(a, results)


def _print(a: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    if a.format == "json":
        rows = [{k: v for k, v in r.items() if k != "details"} for r in results]
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    from traces.prefix import label

    r0 = results[0]
    print(f"{r0['model']}: {r0['scored_tokens']} scored tokens of {r0['corpus']} (prefix token "
          f"{label(r0['prefix_token'])}, prefill {r0['prefill']}), dense "
          f"perplexity {r0['dense_perplexity']:.4f}; hit rates by bytes over {r0['measured_tokens']} tokens after a "
          f"warm-up of {r0['warmup']} ({r0['loop']} loop); intervals 95% (block bootstrap over positions), * where the "
          f"difference to dense excludes 0")
    print_table(table_rows(results))
    return 0
