"""``dipsim demo``: the main job on the embedded default model -- trace, policies in the loop on a
phone, accuracy against speed."""
from __future__ import annotations

import argparse
from pathlib import Path

from common.tables import print_table

from ..config import TraceSpec
from .options import add_config_options, add_verb, given, positive_int, save_figure, workers

#: the demo's configurations: (masking, keep, gamma); gamma only matters for dip-ca
DEMO_POINTS = [("dense", 1.0, 1.0), ("glu-prune", 0.5, 1.0), ("threshold", 0.5, 1.0), ("dip", 0.75, 1.0),
               ("dip", 0.5, 1.0), ("dip", 0.25, 1.0), ("dip-ca", 0.5, 0.7), ("dip-ca", 0.5, 0.5), ("dip-ca", 0.5, 0.3),
               ("dip-ca", 0.5, 0.2), ("dip-ca", 0.5, 0.0), ("dip-ca", 0.75, 0.2)]


def add_parser(sub) -> None:
    s = add_verb(sub, "demo", run, "the main job on the embedded default model: trace, policies in the loop, plot")
    s.add_argument("--model", default="smollm2-135m", help="model to trace (default smollm2-135m)")
    s.add_argument("--tokens", type=positive_int, default=1024, help="tokens to capture (default 1024)")
    s.add_argument("--device", default="phone-12gb-ufs40", help="device profile (default phone-12gb-ufs40)")
    s.add_argument("--jobs", type=workers, default=2, help="sweep worker processes (default 2)")
    s.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    s.add_argument("--fresh", action="store_true", help="capture again even if the trace exists")
    add_config_options(s, TraceSpec, title="the text", only=("prefix_token",))


def run(a: argparse.Namespace) -> int:
    """Capture a trace of the default model (SmolLM2-135M) on the default corpus, run dense, GLU pruning,
    thresholds, DIP and DIP-CA (a gamma axis) with an LRU cache on a phone profile -- tokens/s from the
    device model, perplexity from the real model with each policy in the loop -- and plot accuracy against
    speed with the Pareto front. Rerunning reuses the trace, the finished points and the measured
    accuracies."""
    import yaml

    from traces.format import load
    from traces.prefix import label, resolve
    from common.io import atomic_write, check_folder
    from traces.stats import layer_stats

    from .. import plots
    from ..sweep import load_experiment, load_results, run_sweep

    from traces.models import check_available

    from ..engine import device_models

    out = check_folder(a.out, "--out", create=False)     # made by the first file written into it
    device_models(a.device)          # the device and the model before minutes of capture
    check_available(a.model)
    spec = TraceSpec.from_mapping(given(a, TraceSpec, names=("prefix_token",)), "command line")
    prefix = resolve(spec.prefix_token, a.model, "command line: prefix_token")
    # the prefix token in the name: a trace (and the sweep points over it) under another convention is not reused
    trace_path = out / f"{Path(str(a.model)).stem}-{a.tokens}-prefix-{label(prefix)}.safetensors"
    if trace_path.exists() and not a.fresh:
        print(f"[1/3] trace: reusing {trace_path} (--fresh to capture again)", flush=True)
    else:
        from traces.capture import capture

        print(f"[1/3] trace: capturing {a.tokens} tokens of {a.model} on the default corpus (prefix token "
              f"{label(prefix)})", flush=True)
        capture(a.model, trace_path, tokens=a.tokens, prefix_token=prefix)
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
    atomic_write(exp_path, yaml.safe_dump(exp, sort_keys=False).encode())
    e = load_experiment(exp_path)
    sweep_dir = out / "sweep"
    print(f"[2/3] sweep: {len(e.points)} points of {exp_path} on {a.device}, each also run in the loop on the real "
          f"model -> {sweep_dir}", flush=True)
    run_sweep(e, sweep_dir, jobs=a.jobs, progress=True, log=lambda s: print("      " + s))
    df = load_results(sweep_dir).sort_values("m.tokens_per_s").reset_index(drop=True)
    print_table([{"configuration": plots.point_label(r), "perplexity": r["m.perplexity"],
                  "KL_to_dense": r["m.kl_to_dense"], "top1": r["m.top1_agreement"],
                  "hit_rate": r["m.closed_loop_hit_rate"], "flash_MB_per_token": r["m.flash_bytes_per_token"] / 1e6,
                  "tokens_per_s": r["m.tokens_per_s"], "speedup_vs_dense": r["m.speedup_vs_dense"],
                  "paper_model_tokens_per_s": r["m.analytic_tokens_per_s"]}
                 for r in df.to_dict("records")])
    print(f"speedup_vs_dense: against the dense model on {a.device} with the same cache (LRU, half the MLP)"
          + (", whose DRAM holds its whole MLP" if df["m.dense_mlp_in_dram"].all() else ""))
    title = (f"{t.meta['model']} on {a.device}: LRU cache holding 50% of the MLP, {t.n_tokens} tokens\n"
             f"perplexity measured with the policy in the loop; tokens/s from the device model, "
             f"on top as the speed-up over the dense model with the same cache")
    fig, _ = plots.accuracy_vs_speed(df, title=title)
    png = out / "accuracy-vs-speed.png"
    save_figure(fig, png)
    print(f"[3/3] plot: {png}")
    report = sweep_dir / "report.html"
    print(f"\noutputs:\n  trace:      {trace_path}\n  experiment: {exp_path}\n  results:    "
          f"{sweep_dir / 'results.parquet'}\n  plot:       {png}"
          + (f"\n  report:     {report} (interactive; open it in a browser)" if report.exists() else ""))
    return 0
