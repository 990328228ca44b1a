"""The ``dipsim`` command line.

Every subcommand turns bad input into one line ``dipsim: error: ...`` (exit status 2) naming the
file, field or option and the allowed values; Ctrl-C prints what was kept and exits with 130.
Heavy modules (torch, simpy, pandas) are imported only by the subcommands that need them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from common.errors import DipsimError
from common.jsonio import json_default
from common.tables import print_table

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def deco(fn):
        COMMANDS[name] = fn
        return fn
    return deco


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


# --------------------------------------------------------------------------- trace
def _add_corpus_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus (default: CPython's pydoc topics, offline English text)")
    g.add_argument("--text", metavar="FILE", help="a UTF-8 text file to run the model on")
    g.add_argument("--dataset", metavar="DIR", help="a local dataset directory (datasets.save_to_disk, or "
                   ".parquet/.jsonl/.txt files)")
    g.add_argument("--text-column", default="text", help="column holding the text in --dataset (default: text)")


@command("trace")
def cmd_trace(a: argparse.Namespace) -> int:
    from traces.capture import CaptureInterrupted, capture
    from traces.format import load
    from common.io import check_file

    check_file(a.out, "--out")
    try:
        path = capture(a.model, a.out, tokens=a.tokens, text=a.text, dataset=a.dataset, text_column=a.text_column,
                       context=a.context, dtype=a.dtype, with_h=not a.no_h, progress=not a.quiet)
    except CaptureInterrupted as e:
        print(f"dipsim: {e}", file=sys.stderr)
        return 143 if isinstance(e.__context__, Terminated) else 130
    t = load(path)
    print(f"wrote {path}: {t.n_layers} layers, d_model {t.d_model}, d_ff {t.d_ff}, {t.n_tokens} tokens "
          f"({t.meta['model']}, {t.meta['weight_dtype']})")
    return 0


@command("trace-info")
def cmd_trace_info(a: argparse.Namespace) -> int:
    from traces.format import load
    from traces.stats import layer_stats

    t = load(a.trace)
    rows = layer_stats(t, frac=a.top)
    if a.format == "json":
        print(json.dumps({"summary": t.summary(), "layers": rows}, indent=2))
        return 0
    for k, v in t.summary().items():
        print(f"{k:>16}: {v}")
    print(f"\nper layer: mean |a|, share of |a| mass in the top {a.top:.0%} columns, and mean overlap of "
          f"consecutive tokens' top-{a.top:.0%} sets")
    print_table(rows)
    return 0


# --------------------------------------------------------------------------- replay / mrc
def _number_list(text: str):
    """A number, or a comma-separated list of numbers (one per layer)."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        val: Any = json.loads(v)
    except json.JSONDecodeError:
        val = v
    return k.strip(), val


def _weight_format(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _add_policy_args(p: argparse.ArgumentParser, *, cache: bool = True) -> None:
    from .. import caches, masking

    g = p.add_argument_group("masking")
    g.add_argument("--masking", default="dip", help=f"masking policy: {', '.join(masking.names())} (default dip)")
    g.add_argument("--gamma", type=float, help="dip-ca: penalty for uncached columns, in [0, 1] (1 = dip)")
    g.add_argument("--fixed-top-n", type=int, help="dip-ca: top-n columns by raw score exempt from the penalty")
    g.add_argument("--seed", type=int, help="random: seed")
    g.add_argument("--keep", type=_number_list, default=0.5,
                   help="fraction of columns kept per token, for every group (a number in (0, 1], or one per "
                        "layer, comma-separated; default 0.5)")
    g.add_argument("--keep-up", type=_number_list, help="keep of the up/gate group (default: --keep)")
    g.add_argument("--keep-gate", type=_number_list,
                   help="a separate keep for W_gate: up and gate then get their own masks and caches")
    g.add_argument("--keep-down", type=_number_list, help="keep of the down group (default: --keep)")
    if cache:
        g = p.add_argument_group("DRAM cache")
        g.add_argument("--cache", default="lru", help=f"cache policy: {', '.join(caches.names())} (default lru)")
        g.add_argument("--cache-param", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="a parameter of the cache policy, e.g. hot_fraction=0.3 for pinned (repeatable)")
        b = g.add_mutually_exclusive_group()
        b.add_argument("--dram-fraction", type=float, help="DRAM cache budget as a fraction of the MLP weights "
                                                           "(default 0.5)")
        b.add_argument("--dram-bytes", type=float, help="DRAM cache budget in bytes")
        g.add_argument("--allocation", default="uniform", help="split of the budget over layers: uniform (the "
                                                               "paper's) or benefit (default uniform)")
    g = p.add_argument_group("replay")
    g.add_argument("--weight-format", type=_weight_format, default=None,
                   help="bytes per weight: source (the trace's, default), int4, int8, fp16, bf16, fp32, or a number")
    g.add_argument("--warmup", type=int, default=16, help="tokens reported apart as warm-up (default 16)")
    g.add_argument("--calib-tokens", type=int, default=64,
                   help="trace prefix for calibrated policies and the benefit allocation (default 64)")
    g.add_argument("--tokens", type=_positive_int, help="replay only the first N tokens")
    g.add_argument("--threads", type=_positive_int, help="threads over layers (default: 2 for large models)")


def masking_params(a: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("gamma", a.gamma), ("fixed_top_n", a.fixed_top_n), ("seed", a.seed)) if v is not None}


def replay_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    kw = dict(keep=a.keep, keep_up=a.keep_up, keep_gate=a.keep_gate, keep_down=a.keep_down,
              weight_format=a.weight_format, warmup=a.warmup, calib_tokens=a.calib_tokens, tokens=a.tokens,
              threads=a.threads, **masking_params(a))
    if hasattr(a, "allocation"):
        kw.update(cache=a.cache, allocation=a.allocation, dram_fraction=a.dram_fraction, dram_bytes=a.dram_bytes,
                  cache_params=dict(a.cache_param))
    return kw


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@command("replay")
def cmd_replay(a: argparse.Namespace) -> int:
    from traces.format import load

    from common.io import check_file

    from ..replay import replay

    for opt, val in (("--save-log", a.save_log), ("--chrome-trace", a.chrome_trace)):
        if val:
            check_file(val, opt)
    t = load(a.trace)
    if a.profile:  # check the device (and options) before the replay's work
        from ..engine import device_models

        device_models(a.profile)
    log = replay(t, a.masking, progress=not a.quiet, **replay_kwargs(a))
    if a.save_log:
        log.save(a.save_log)
    d = log.to_dict()
    if a.profile:
        from ..engine import simulate

        res = simulate(log, a.profile, layout={"reorder": a.reorder}, mode=a.engine_mode,
                       overlap_io=not a.no_overlap_io, overlap_compute=not a.no_overlap_compute,
                       chrome_trace=a.chrome_trace)
        d.update(res.summary())
    if a.format == "json":
        print(json.dumps(d, indent=2, default=json_default))
        return 0
    print(f"{t.meta['model']}: {a.masking}({', '.join(f'{k}={v}' for k, v in masking_params(a).items())}) + "
          f"{a.cache}, {d['tokens']} tokens after {log.warmup} warm-up, replayed in {log.seconds:.2f} s")
    for k in ("hit_rate", "column_hit_rate", "flash_bytes_per_token", "dram_bytes_per_token", "mlp_bytes_per_token"):
        print(f"{k:>22}: {d[k]:.4g}")
    print_table([{"group": g, **v} for g, v in d["groups"].items()])
    if a.profile:
        print(f"\non {d['device']} ({d['engine_mode']} mode):")
        for k in ("tokens_per_s", "analytic_tokens_per_s", "latency_ms_p50", "latency_ms_p99", "flash_requests_per_token",
                  "mean_request_bytes", "flash_bytes_per_token_read", "time_flash_ms", "time_dram_ms",
                  "time_compute_ms", "time_stall_ms", "energy_mj_per_token", "dram_footprint_bytes",
                  "memory_saved_fraction", "speedup_vs_dense_stream", "fits_in_dram"):
            v = d.get(k)
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
        if a.chrome_trace:
            print(f"chrome trace: {a.chrome_trace} (open in chrome://tracing or ui.perfetto.dev)")
    return 0


@command("mrc")
def cmd_mrc(a: argparse.Namespace) -> int:
    import csv

    from traces.format import load

    from common.io import FIGURE_SUFFIXES, atomic, check_file

    from .. import mrc

    if a.points < 2:
        raise DipsimError(f"--points must be >= 2 (cache sizes from 0 to 1), got {a.points}")
    out = check_file(a.out, "--out")
    if a.plot:
        check_file(a.plot, "--plot", FIGURE_SUFFIXES)
    t = load(a.trace)
    kw = replay_kwargs(a)
    kw.pop("threads")
    fractions = [round(i / (a.points - 1), 6) for i in range(a.points)]
    rows = mrc.curve(t, a.masking, fractions=fractions, opt=not a.no_opt, cache=a.cache, **kw)
    with atomic(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print_table(rows)
    print(f"\nwrote {out}")
    if a.plot:
        fig, _ = mrc.plot_curve(rows, title=f"{t.meta['model']}: {a.masking}, keep {a.keep}")
        _save_fig(fig, a.plot, "--plot")
        print(f"wrote {a.plot}")
    return 0


def _save_fig(fig, path: str | Path, option: str = "--out") -> None:
    from common.io import FIGURE_SUFFIXES, atomic, check_file

    path = check_file(path, option, FIGURE_SUFFIXES)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=130)


# --------------------------------------------------------------------------- sweep / plot
@command("sweep")
def cmd_sweep(a: argparse.Namespace) -> int:
    from ..sweep import load_experiment, run_sweep

    exp = load_experiment(a.experiment)
    out = Path(a.out) if a.out else Path("results") / exp.name
    if out.exists() and not out.is_dir():
        raise DipsimError(f"--out {out}: exists and is not a folder; give the sweep's results folder")
    print(f"sweep {exp.name}: {len(exp.points)} points ({len(exp.dropped)} dropped) -> {out}", file=sys.stderr)
    if a.dry_run:
        for p in exp.points:
            print(p.key)
        for k, why in exp.dropped:
            print(f"dropped {k}: {why}")
        return 0
    path = run_sweep(exp, out, jobs=a.jobs, executor=a.executor, scheduler=a.scheduler, progress=not a.quiet)
    print(f"results: {path}")
    return 0


@command("plot")
def cmd_plot(a: argparse.Namespace) -> int:
    from common.io import FIGURE_SUFFIXES, check_file

    from .. import plots
    from ..sweep import load_results

    if a.out:
        check_file(a.out, "--out", FIGURE_SUFFIXES)
    df = load_results(a.results)
    kinds = {"auto": plots.auto, "gamma": plots.vs_gamma, "keep": plots.vs_keep, "device": plots.per_device,
             "pareto": plots.accuracy_vs_speed if "m.perplexity" in df.columns else plots.pareto}
    fig, _ = kinds[a.kind](df)
    out = Path(a.out) if a.out else Path(a.results) / f"{a.kind}.png"
    _save_fig(fig, out)
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- calibrate / validate
def _bytes_arg(text: str) -> int:
    from ..hardware import parse_quantity

    try:
        return int(parse_quantity(text, "size"))
    except DipsimError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


@command("calibrate")
def cmd_calibrate(a: argparse.Namespace) -> int:
    from common.io import check_file

    from ..disk import calibrate

    check_file(a.out, "--out", (".yaml", ".yml"))
    sizes = [_bytes_arg(x) for x in a.sizes.split(",")]
    res = calibrate(a.file, a.out, size=a.size, sizes=sizes, depths=a.depths, seconds=a.seconds, passes=a.passes,
                    name=a.name, progress=not a.quiet, io=a.io)
    fit = res["fit"]
    if a.format == "json":
        print(json.dumps({"profile": res["profile"], "fit": fit, "points": res["points"]}, indent=2))
        return 0
    print(f"fitted: latency {fit['latency'] * 1e6:.1f} us, unit bandwidth {fit['unit_bandwidth'] / 1e6:.0f} MB/s, "
          f"{fit['units']} units, link {fit['link_bandwidth'] / 1e6:.0f} MB/s, host {fit['host_overhead'] * 1e6:.1f} us "
          f"per request; model vs measured: median |error| "
          f"{fit['median_abs_error']:.1%}, max {fit['max_abs_error']:.1%}")
    print(f"wrote {res['profile']} (use it as --profile {res['profile']})")
    return 0


@command("validate")
def cmd_validate(a: argparse.Namespace) -> int:
    from traces.format import load

    from ..disk import validate

    t = load(a.trace)
    kw = replay_kwargs(a)
    kw.pop("tokens", None)
    res = validate(t, a.profile, file=a.file, rounds=a.rounds, tokens=a.tokens or 32, progress=not a.quiet,
                   layout_opts={"reorder": a.reorder}, masking=a.masking, io=a.io, **kw)
    if a.format == "json":
        print(json.dumps(res, indent=2, default=json_default))
        return 0
    print(f"{res['tokens']} tokens x {res['rounds']} rounds, {res['requests_per_token']:.0f} requests per token, "
          f"up to {res['parallelism']} reads outstanding ({res['io']})")
    print(f"  measured:  {res['measured_s_per_token'] * 1e3:.3f} ms/token flash")
    print(f"  simulated: {res['simulated_s_per_token'] * 1e3:.3f} ms/token flash")
    print(f"  median error per token: {res['median_error']:.1%} (signed {res['median_signed_error']:+.1%}); per round: "
          + ", ".join(f"{e:+.1%}" for e in res["round_median_errors"])
          + f"; measured spread over rounds {res['measured_spread']:.0%}")
    return 0


# --------------------------------------------------------------------------- demo
@command("demo")
def cmd_demo(a: argparse.Namespace) -> int:
    """The main job on the embedded default model: trace -> policies in the loop on a phone -> plot."""
    import yaml

    from traces.format import load
    from common.io import check_folder
    from traces.stats import layer_stats

    from .. import plots
    from ..sweep import load_experiment, load_results, run_sweep

    out = check_folder(a.out, "--out")
    trace_path = out / f"{Path(str(a.model)).stem}-{a.tokens}.safetensors"
    if trace_path.exists() and not a.fresh:
        print(f"[1/3] trace: reusing {trace_path} (--fresh to capture again)", flush=True)
    else:
        from traces.capture import capture

        print(f"[1/3] trace: capturing {a.tokens} tokens of {a.model} on the default corpus", flush=True)
        capture(a.model, trace_path, tokens=a.tokens)
    t = load(trace_path)
    stats = layer_stats(t)
    print(f"      {t.meta['model']}: {t.n_layers} layers, d_model {t.d_model}, d_ff {t.d_ff}, {t.n_tokens} tokens, "
          f"{t.meta['weight_dtype']} ({t.meta['bytes_per_weight']:.3g} B/weight)")
    mean = {k: sum(r[k] for r in stats) / len(stats) for k in stats[0] if k != "layer"}
    print(f"      top-50% columns hold {mean['x_top_mass']:.0%} of |x| and {mean.get('h_top_mass', float('nan')):.0%} "
          f"of |h|; consecutive tokens share {mean['x_top_overlap']:.0%} / {mean.get('h_top_overlap', float('nan')):.0%}"
          f" of their top-50% sets")

    exp_path = out / "demo-sweep.yaml"
    exp = {"name": "demo",
           "description": "Accuracy against speed: dense, GLU pruning, TEAL-like thresholds, DIP and DIP-CA's gamma, "
                          "each run in the loop on the real model and on a phone profile (the main job of dipsim demo)",
           "trace": str(trace_path.resolve()),
           "base": {"cache": "lru", "dram_fraction": 0.5, "device": a.device, "accuracy": True},
           "zip": {"masking": [m for m, _, _ in DEMO_POINTS], "keep": [k for _, k, _ in DEMO_POINTS],
                   "gamma": [g for _, _, g in DEMO_POINTS]}}
    exp_path.write_text(yaml.safe_dump(exp, sort_keys=False))
    e = load_experiment(exp_path)
    sweep_dir = out / "sweep"
    print(f"[2/3] sweep: {len(e.points)} points of {exp_path} on {a.device}, each also run in the loop on the real "
          f"model -> {sweep_dir}", flush=True)
    run_sweep(e, sweep_dir, jobs=a.jobs, progress=True, log=lambda s: print("      " + s))
    df = load_results(sweep_dir).sort_values("m.tokens_per_s").reset_index(drop=True)
    print_table([{"configuration": plots.point_label(r), "perplexity": r["m.perplexity"],
                  "KL_to_dense": r["m.kl_to_dense"], "top1": r["m.top1_agreement"],
                  "hit_rate": r["m.closed_loop_hit_rate"], "flash_MB_per_token": r["m.flash_bytes_per_token"] / 1e6,
                  "tokens_per_s": r["m.tokens_per_s"], "paper_model_tokens_per_s": r["m.analytic_tokens_per_s"]}
                 for r in df.to_dict("records")])
    title = (f"{t.meta['model']} on {a.device}: LRU cache holding 50% of the MLP, {t.n_tokens} tokens\n"
             f"perplexity measured with the policy in the loop; tokens/s from the device model")
    fig, _ = plots.accuracy_vs_speed(df, title=title)
    png = out / "accuracy-vs-speed.png"
    _save_fig(fig, png)
    print(f"[3/3] plot: {png}")
    print(f"\noutputs:\n  trace:      {trace_path}\n  experiment: {exp_path}\n  results:    "
          f"{sweep_dir / 'results.parquet'}\n  plot:       {png}")
    return 0


#: the demo's configurations: (masking, keep, gamma); gamma only matters for dip-ca
DEMO_POINTS = [("dense", 1.0, 1.0), ("glu-prune", 0.5, 1.0), ("threshold", 0.5, 1.0), ("dip", 0.75, 1.0),
               ("dip", 0.5, 1.0), ("dip", 0.25, 1.0), ("dip-ca", 0.5, 0.7), ("dip-ca", 0.5, 0.5), ("dip-ca", 0.5, 0.3),
               ("dip-ca", 0.5, 0.2), ("dip-ca", 0.5, 0.0), ("dip-ca", 0.75, 0.2)]


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dipsim",
        description="Memory-hierarchy simulator for on-device LLM inference with dynamic activation sparsity: "
                    "capture activation traces from real models, replay masking (DIP, DIP-CA, baselines) and "
                    "DRAM cache policies over them, and turn the flash/DRAM traffic into time on modelled devices.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from traces import __version__

    p.add_argument("--version", action="version", version=f"dipsim {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("trace", help="capture MLP activations of a real model into a trace file",
                       description="Run a real model over a corpus and record, for every layer and token, the MLP "
                                   "input x and h = act(W_gate x) * (W_up x).")
    s.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (default), gemma3-270m, qwen2.5-0.5b or qwen2.5-coder-1.5b (those two once "
                        "installed with: python3 tasks.py model NAME), a local Hugging Face model directory, or a "
                        ".gguf file")
    s.add_argument("--tokens", type=_positive_int, default=512, help="number of tokens to record (default 512)")
    s.add_argument("--out", required=True, help="trace file to write (.safetensors)")
    s.add_argument("--context", type=_positive_int, default=512,
                   help="context window: the corpus is processed in windows of this many positions (default 512)")
    s.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype (default float16)")
    s.add_argument("--no-h", action="store_true", help="record only x (no down-projection masking possible then)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_corpus_args(s)

    s = sub.add_parser("trace-info", help="print a trace's dimensions and per-layer activation statistics")
    s.add_argument("trace", help="trace file")
    s.add_argument("--top", type=float, default=0.5, help="fraction of columns for the top-set statistics (default 0.5)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")

    s = sub.add_parser("replay", help="replay a masking policy and a DRAM cache over a trace",
                       description="Replay a masking policy with a DRAM cache of weight columns per layer over a "
                                   "trace: hit rate, flash and DRAM bytes per token, per matrix group.")
    s.add_argument("--trace", required=True, help="trace file (from dipsim trace)")
    _add_policy_args(s)
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("--save-log", metavar="FILE", help="also save the full access log (.npz)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g = s.add_argument_group("device simulation (with --profile)")
    g.add_argument("--profile", help="device profile name or YAML path (see dipsim profiles): adds tokens/s, "
                                     "latency, flash requests, the analytic model, ...")
    g.add_argument("--engine-mode", choices=["batch", "fine"], default="batch",
                   help="flash time per request batch (vectorized queue model, default) or per request event")
    g.add_argument("--no-overlap-io", action="store_true", help="cached-column reads wait for the flash reads")
    g.add_argument("--no-overlap-compute", action="store_true", help="compute adds to memory time (no roofline)")
    g.add_argument("--reorder", choices=["none", "frequency", "coactivation"], default="none",
                   help="column placement on flash (default: index order)")
    g.add_argument("--chrome-trace", metavar="JSON", help="write a chrome://tracing timeline of the first tokens")

    s = sub.add_parser("mrc", help="miss-ratio curve: hit rate against DRAM cache size",
                       description="Hit rate against cache size (fraction of MLP weights, uniform allocation). "
                                   "Cache-oblivious masking: LRU for every size in one pass (stack distances) plus "
                                   "OPT (belady) per size; dip-ca: replay per size.")
    s.add_argument("--trace", required=True, help="trace file")
    _add_policy_args(s, cache=False)
    s.add_argument("--cache", default="lru", help="cache policy for the curve (default lru: one pass; others: "
                                                  "replay per size)")
    s.add_argument("--points", type=_positive_int, default=21, help="sizes from 0 to 1 (default 21)")
    s.add_argument("--no-opt", action="store_true", help="skip the OPT (belady) curve")
    s.add_argument("--out", default="mrc.csv", help="table to write (CSV, default mrc.csv)")
    s.add_argument("--plot", metavar="PNG", help="also write a plot")
    s.add_argument("-q", "--quiet", action="store_true", help="(accepted for symmetry; mrc prints no progress bar)")

    s = sub.add_parser("sweep", help="run a YAML sweep experiment (resumable)",
                       description="Run every point of an experiment file (grid and zip axes over any parameter) "
                                   "and keep OUT/results.parquet current, one row per point. Rerunning resumes: "
                                   "finished points are skipped.")
    s.add_argument("experiment", help="experiment YAML (see experiments/)")
    s.add_argument("--out", help="results directory (default results/<experiment name>)")
    s.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    s.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local process pool (default) or Dask distributed")
    s.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    s.add_argument("--dry-run", action="store_true", help="list the points (and the dropped ones) and stop")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("plot", help="plot a sweep's results",
                       description="Plot a results directory: by default the plot that fits its varying parameters "
                                   "(gamma, keep, device, DRAM budget).")
    s.add_argument("results", help="sweep results directory")
    s.add_argument("--kind", choices=["auto", "gamma", "keep", "device", "pareto"], default="auto",
                   help="what to plot against: gamma, keep, device, or the Pareto front of tokens/s against accuracy "
                        "(or keep); auto picks from the parameters that vary (default)")
    s.add_argument("--out", help="image to write (default RESULTS/<kind>.png)")

    s = sub.add_parser("calibrate", help="measure this machine's storage with direct I/O and fit a flash profile",
                       description="Random O_DIRECT reads of FILE (created with random data if missing) at request "
                                   "sizes 4 KiB - 1 MiB and queue depths 1 - 32; fits the flash model (latency, unit "
                                   "bandwidth, units, link bandwidth) and writes a device profile YAML.")
    s.add_argument("--file", required=True, help="file to read (on the storage to measure; not tmpfs)")
    s.add_argument("--out", required=True, help="device profile to write, e.g. my-disk.yaml")
    s.add_argument("--size", type=_bytes_arg, default=1 << 30, help="file size (default 1 GiB)")
    s.add_argument("--sizes", default="4KiB,16KiB,64KiB,256KiB,1MiB", help="request sizes (comma-separated)")
    s.add_argument("--depths", type=_int_list, default=[1, 2, 4, 8, 16, 32], help="queue depths (default 1,2,4,8,16,32)")
    s.add_argument("--seconds", type=float, default=0.25, help="seconds per (size, depth) point and pass (default 0.25)")
    s.add_argument("--passes", type=_positive_int, default=3,
                   help="passes over the grid, in shuffled order; each point keeps its median pass (default 3)")
    s.add_argument("--io", choices=["auto", "aio", "threads"], default="auto",
                   help="how reads are issued: Linux native AIO (one thread, exact queue depth) or one thread per "
                        "outstanding read (default auto: aio where available)")
    s.add_argument("--name", help="profile name (default: the file name of --out)")
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("validate", help="real direct reads of a configuration's miss stream vs the simulated time",
                       description="Replay a configuration, lay the MLP weights out in FILE (random data of the same "
                                   "size), read each token's misses with O_DIRECT in the order and concurrency the "
                                   "engine assumes, and compare measured with simulated flash time per token.")
    s.add_argument("--trace", required=True, help="trace whose miss stream is read (from dipsim trace)")
    s.add_argument("--profile", required=True, help="device profile (e.g. from dipsim calibrate)")
    s.add_argument("--file", required=True, help="data file on the storage the profile describes")
    s.add_argument("--rounds", type=_positive_int, default=3, help="interleaved measured/simulated rounds (default 3)")
    s.add_argument("--reorder", choices=["none", "frequency", "coactivation"], default="none")
    s.add_argument("--io", choices=["auto", "aio", "threads"], default="auto",
                   help="how reads are issued (use the same as for calibrate; default auto: aio where available)")
    _add_policy_args(s)
    s.add_argument("--format", choices=["table", "json"], default="table")
    s.add_argument("-q", "--quiet", action="store_true")

    from .eval import add_eval_parser, run_eval
    from ..hardware import add_profiles_parser, run_profiles

    add_profiles_parser(sub)
    COMMANDS["profiles"] = run_profiles
    add_eval_parser(sub, _add_corpus_args, _positive_int)
    COMMANDS["eval"] = run_eval

    s = sub.add_parser("demo", help="the main job on the embedded default model: trace, sweep, plot",
                       description="Capture a trace of the default model (SmolLM2-135M) on the default corpus, run "
                                   "dense, GLU pruning, thresholds, DIP and DIP-CA (a gamma axis) with an LRU cache "
                                   "on a phone profile -- tokens/s from the device model, perplexity from the real "
                                   "model with each policy in the loop -- and plot accuracy against speed with the "
                                   "Pareto front. Rerunning reuses the trace, the finished points and the measured "
                                   "accuracies.")
    s.add_argument("--model", default="smollm2-135m", help="model to trace (default smollm2-135m)")
    s.add_argument("--tokens", type=_positive_int, default=1024, help="tokens to capture (default 1024)")
    s.add_argument("--device", default="phone-12gb-ufs40", help="device profile (default phone-12gb-ufs40)")
    s.add_argument("--jobs", type=_positive_int, default=2, help="sweep worker processes (default 2)")
    s.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    s.add_argument("--fresh", action="store_true", help="capture again even if the trace exists")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it cleans up as after Ctrl-C."""


def _terminate(signum, frame):
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a second SIGTERM kills at once
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 0
    try:
        rc = COMMANDS[a.command](a)
    except DipsimError as e:
        print(f"dipsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"dipsim: {e}" if str(e) else "dipsim: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) or isinstance(e.__context__, Terminated) else 130
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
