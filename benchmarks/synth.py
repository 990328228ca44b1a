"""Synthetic 14B-class traces: generation and replay time, and the trace model's validation.

    python benchmarks/synth.py [--like phi3-medium] [--tokens 1024] [--dir DIR] [--validate TRACE_DIR]

Prints
* wall and CPU seconds to generate ``--like`` (default Phi-3-Medium, 40 x 5120 x 17920) x 1024
  tokens streamed to a trace file (target: <= 60 s on the 2-core machines), and the machine's load
  average before and after, since the machines are shared;
* wall seconds of dip-ca (gamma 0.2, keep 0.5) + LRU at half the MLP in DRAM over it (target <= 20 s);
* the leave-one-model-out validation stored in the shipped fit, or, with ``--validate DIR``, a
  fresh one on the real traces in DIR (a few minutes).

The trace goes to a temporary file in ``--dir`` (default: the system's temporary folder) and is
deleted afterwards unless ``--keep``.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", default="phi3-medium")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="folder for the generated trace (default: temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated trace")
    ap.add_argument("--validate", metavar="TRACE_DIR", help="rerun the validation on the real traces in this folder")
    a = ap.parse_args()

    import numpy as np

    import simulator
    import traces
    from traces import synth

    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}; load average {os.getloadavg()[0]:.2f} "
          f"(shared: other jobs slow every figure)")
    fit = synth.Fit.load()
    folder = Path(a.dir or tempfile.gettempdir())
    path = folder / f"synth-bench-{a.like}-{a.tokens}-{os.getpid()}.safetensors"
    simulator.replay(synth.generate_trace(fit, 2, 64, 128, 24), "dip-ca", "lru", keep=0.5, dram_fraction=0.5,
                     gamma=0.2, warmup=0)                         # compile the kernels outside the timings
    try:
        c0, t0 = _cpu(), time.perf_counter()
        synth.like(a.like, a.tokens, path, fit=fit)
        gen_s, gen_cpu = time.perf_counter() - t0, _cpu() - c0
        t = traces.load(path, check_finite=False)
        values = t.n_layers * (t.d_model + t.d_ff) * t.n_tokens
        print(f"generate {a.like} ({t.n_layers} x {t.d_model} x {t.d_ff}) x {t.n_tokens} tokens = {values / 1e9:.2f} G "
              f"values, {path.stat().st_size / 1e9:.2f} GB: {gen_s:.1f} s wall, {gen_cpu:.1f} s CPU "
              f"({values / gen_s / 1e6:.0f} M values/s; target <= 60 s)")
        t0 = time.perf_counter()
        tot = simulator.replay(t, "dip-ca", "lru", keep=0.5, dram_fraction=0.5, gamma=0.2).totals()
        rep_s = time.perf_counter() - t0
        print(f"replay dip-ca(gamma=0.2) + lru, keep 0.5, 50% DRAM: {rep_s:.1f} s (target <= 20 s); "
              f"hit rate {tot['hit_rate']:.4f}, flash {tot['flash_bytes_per_token'] / 1e6:.1f} MB/token")
    finally:
        if not a.keep:
            path.unlink(missing_ok=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    if a.validate:
        from simulator.cli import main as synth_main

        sys.exit(synth_main(["synth", "validate", "--trace-dir", a.validate]))
    v = fit.validation
    if not v:
        print("the shipped fit carries no validation")
        return
    print(f"\nshipped fit {fit.digest()}: leave-one-model-out at {v['tokens']} tokens, max |hit-rate error| "
          f"{v['hit_rate_abs_error_max']:.4f} (mean {v['hit_rate_abs_error_mean']:.4f}), MRC max "
          f"{v['mrc_abs_error_max']:.4f}, flash bytes/token max relative error {v['flash_rel_error_max']:.1%}")
    for m in v["by_model"]:
        print(f"  held out {m['model']:>20}: max |hit-rate error| {m['hit_rate_abs_error_max']:.4f}, "
              f"MRC {m['mrc_abs_error_max']:.4f}, flash {m['flash_rel_error_max']:.1%}")


if __name__ == "__main__":
    main()
