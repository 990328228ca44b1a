"""``dipsim replay``: a masking policy and a DRAM cache over a trace; with ``--profile``, the device."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from common.errors import DipsimError
from common.jsonio import json_default
from common.tables import print_table

from ..config import EngineConfig, LayoutConfig, PointConfig, ReplayConfig
from .options import add_config_options, add_masking_parameter_options, add_verb, flag, given, replay_config, workers

#: the engine's figures the table shows (the JSON output holds all of them)
SHOWN = ("tokens_per_s", "dense_tokens_per_s", "speedup_vs_dense", "analytic_tokens_per_s", "latency_ms_p50",
         "latency_ms_p99", "flash_requests_per_token", "mean_request_bytes", "flash_read_bytes_per_token",
         "flash_ms_per_token", "dram_ms_per_token", "compute_ms_per_token", "stall_ms_per_token", "energy_mj_per_token",
         "dram_footprint_bytes", "memory_saved_fraction", "speedup_vs_dense_stream", "fits_in_dram")


def add_replay_options(s, *, skip=()) -> None:
    """The replay configuration's options, grouped as users think of them."""
    add_config_options(s, ReplayConfig, title="masking", skip=("cache", "cache_params", "dram_fraction",
                                                              "dram_bytes", "allocation", "allocation_params",
                                                              "weight_format", "warmup", "calib_tokens", "tokens",
                                                              *skip))
    add_masking_parameter_options(s)
    add_config_options(s, ReplayConfig, title="DRAM cache",
                       skip=[f for f in ("masking", "keep", "keep_up", "keep_gate", "keep_down", "weight_format",
                                         "warmup", "calib_tokens", "tokens")] + list(skip))
    add_config_options(s, ReplayConfig, title="replay",
                       skip=[f for f in ("masking", "keep", "keep_up", "keep_gate", "keep_down", "cache",
                                         "cache_params", "dram_fraction", "dram_bytes", "allocation",
                                         "allocation_params")] + list(skip))


def add_device_options(s) -> None:
    add_config_options(s, EngineConfig, title="device simulation (with --profile)", prefix="engine")
    add_config_options(s, LayoutConfig, title="layout of the weights on flash (with --profile)", prefix="layout")


def device_options(a: argparse.Namespace) -> tuple[EngineConfig, LayoutConfig]:
    return (EngineConfig.from_mapping(given(a, EngineConfig, prefix="engine"), "command line: engine"),
            LayoutConfig.from_mapping(given(a, LayoutConfig, prefix="layout"), "command line: layout"))


def add_parser(sub) -> None:
    s = add_verb(sub, "replay", run, "replay a masking policy and a DRAM cache over a trace")
    s.add_argument("--trace", help="trace file (from dipsim trace); required unless --config gives it")
    s.add_argument("--config", metavar="FILE", help="a one-point experiment file (dipsim optimize's best.yaml, a sweep "
                                                    "without axes): its trace, settings, device, engine and layout; "
                                                    "no other run option beside it")
    add_replay_options(s)
    s.add_argument("--threads", type=workers, help="threads over layers (default: 2 for large models)")
    s.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    s.add_argument("--save-log", metavar="FILE", help="also save the full access log (.npz)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.add_argument("--profile", "--device", dest="profile",
                   help="device profile name or YAML path (see dipsim profiles; --device is the same option, as "
                        "experiments call it): adds tokens/s, latency, flash requests, the paper's analytic model, ...")
    s.add_argument("--chrome-trace", metavar="JSON", help="with --profile: write a chrome://tracing timeline of the "
                                                          "first tokens")
    add_device_options(s)


def _against_dense(a: argparse.Namespace, point: PointConfig, d: dict) -> dict:
    """The run against its dense baseline (``sweep.dense``): a dense run is its own; else the dense
    model is replayed and simulated under the same settings."""
    from ..sweep.dense import dense_figures, is_own_baseline, versus_dense
    from ..sweep.execute import dense_baseline

    if is_own_baseline(point):
        return versus_dense(d, dense_figures(d))
    if not a.quiet and a.format == "table":
        print("dense baseline: replaying the dense model under the same settings", file=sys.stderr, flush=True)
    return versus_dense(d, dense_baseline(point, threads=a.threads))


def _from_config(a: argparse.Namespace) -> tuple[ReplayConfig, EngineConfig, LayoutConfig]:
    """The run a one-point experiment file describes (``--config``); its trace captured if need be, and
    set with its device on ``a``."""
    from ..config import masking_parameter_names
    from ..sweep import load_point, trace_for
    from ..sweep.execute import trace_path

    beside = [flag(k) for k in {**given(a, ReplayConfig), **given(a, ReplayConfig, names=masking_parameter_names())}]
    beside += [f"--{k}" for k in ("trace", "profile") if getattr(a, k)]
    beside += [flag(f"{pre}_{k}") for pre, cls in (("engine", EngineConfig), ("layout", LayoutConfig))
               for k in given(a, cls, prefix=pre)]
    if beside:
        raise DipsimError(f"{beside[0]}: --config {a.config} sets the whole run (trace, settings, device); give "
                          f"one or the other")
    point = load_point(a.config)
    if point.config.variant or point.config.adapter:
        raise DipsimError(f"--config {a.config}: a pruned variant or adapter runs in dipsim sweep, not replay")
    trace_for(point.config.trace, progress=not a.quiet)
    a.trace, a.profile = str(trace_path(point.config.trace)), point.config.device
    return point.config.replay, point.config.engine, point.config.layout


def run(a: argparse.Namespace) -> int:
    """Replay a masking policy with a DRAM cache of weight columns per layer over a trace: hit rate, flash and
    DRAM bytes per token, per matrix group; with --profile, tokens/s and latency on a device."""
    from common.io import check_outputs
    from traces.format import load

    from ..replay import replay

    if a.config:
        cfg, engine, layout = _from_config(a)
    elif not a.trace:
        raise DipsimError("--trace is required (or --config FILE, a one-point experiment)")
    else:
        cfg, engine, layout = replay_config(a), *device_options(a)
    if not a.profile:   # device options do nothing without a device: say so rather than ignore them
        dev = (["--chrome-trace"] if a.chrome_trace else []) + [
            flag(f"{prefix}_{k}") for prefix, cls in (("engine", EngineConfig), ("layout", LayoutConfig))
            for k in given(a, cls, prefix=prefix)]
        if dev:
            raise DipsimError(f"{dev[0]} needs --profile (the device to simulate; see dipsim profiles)")
    check_outputs([("--save-log", a.save_log, (".npz",)), ("--chrome-trace", a.chrome_trace, (".json",))],
                  [("--trace", a.trace), ("--profile", a.profile)])
    t = load(a.trace)
    given_cfg, budget_note = cfg, None
    from ..engine.budget import budget_source

    source = budget_source(cfg, a.profile)
    if a.profile:  # check the device before the replay's work
        from ..engine import device_models
        from ..engine.budget import device_budget

        device_models(a.profile)
        if source == "device":   # computed once: the note shows the terms of the budget the run uses
            budget = device_budget(a.profile, t.meta)
            budget_note = f"cache budget from the device: {budget.explain()}"
            cfg = dataclasses.replace(cfg, dram_bytes=budget.cache_bytes)
    log = replay(t, cfg, progress=not a.quiet, threads=a.threads)
    if a.save_log:
        log.save(a.save_log)
    d = log.to_dict()
    d.update(cache_budget_from=source, cache_budget_bytes=int(round(float(log.config["dram_bytes"]))))
    if a.profile:
        from ..engine import simulate

        d.update(simulate(log, a.profile, layout=layout, engine=engine, chrome_trace=a.chrome_trace).summary())
        d.update(_against_dense(a, PointConfig(a.trace, given_cfg, a.profile, engine, layout), d))
    if a.format == "json":
        print(json.dumps(d, indent=2, default=json_default))
        return 0
    params = ", ".join(f"{k}={v}" for k, v in cfg.masking_params.items())
    print(f"{t.meta['model']}: {cfg.masking}({params}) + {cfg.cache}, {d['measured_tokens']} tokens after "
          f"{log.warmup} warm-up, replayed in {log.seconds:.2f} s")
    if budget_note:
        print(budget_note)
    for k in ("hit_rate", "column_hit_rate", "flash_bytes_per_token", "dram_bytes_per_token", "mlp_bytes_per_token"):
        print(f"{k:>22}: {d[k]:.4g}")
    print_table([{"group": g, **v} for g, v in d["groups"].items()])
    if a.profile:
        print(f"\non {d['device']} ({d['engine_mode']} mode):")
        print("speedup_vs_dense: against the dense model on this device with the same cache budget, cache, "
              "allocation, weight format and layout"
              + (" (its DRAM holds the whole MLP: it never reads flash)" if d["dense_mlp_in_dram"] else ""))
        for k in SHOWN:
            v = d.get(k)
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
        if a.chrome_trace:
            print(f"chrome trace: {a.chrome_trace} (open in chrome://tracing or ui.perfetto.dev)")
    return 0
