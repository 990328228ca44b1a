"""Calibrate this machine's storage, then validate the engine against real direct reads.

    python benchmarks/validate.py [--file /work/dipsim-disk.bin] [--rounds 5]

Runs ``dipsim calibrate`` (O_DIRECT, 4 KiB - 1 MiB, queue depths 1 - 32) and then, for a few
configurations of a SmolLM2 trace, ``dipsim validate``: measured vs simulated flash time per token
with measured and simulated rounds interleaved. Prints each configuration's median error (target
<= 15%) and the spread of the measured time over rounds (the disks here are shared and noisy).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(Path.cwd() / "out" / "dipsim-disk.bin"),
                    help="data file on the disk to measure (not tmpfs)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--passes", type=int, default=5, help="calibration passes over the grid (median kept)")
    a = ap.parse_args()

    import traces
    from simulator.disk import calibrate, validate
    from simulator.sweep import trace_for

    work = Path(a.file).parent
    prof = work / "calibrated-disk.yaml"
    cal = calibrate(a.file, prof, passes=a.passes, progress=False)
    fit = cal["fit"]
    print(f"machine: {os.cpu_count()} cores; calibration: latency {fit['latency'] * 1e6:.1f} us, unit bandwidth "
          f"{fit['unit_bandwidth'] / 1e6:.0f} MB/s, {fit['units']} units, link {fit['link_bandwidth'] / 1e6:.0f} MB/s, "
          f"host {fit['host_overhead'] * 1e6:.1f} us/request, I/O {cal['io']}; "
          f"fit median |error| {fit['median_abs_error']:.1%} (max {fit['max_abs_error']:.1%}) over 30 points")
    trace = trace_for({"model": "smollm2-135m", "tokens": 1024})
    configs = [
        ("dip-ca gamma 0.2, keep 0.5, 50% cache", dict(masking="dip-ca", gamma=0.2, keep=0.5, dram_fraction=0.5)),
        ("dip keep 0.5, 50% cache", dict(masking="dip", keep=0.5, dram_fraction=0.5)),
        ("dense, 25% cache", dict(masking="dense", dram_fraction=0.25)),
        ("dip keep 0.5, co-activation layout", dict(masking="dip", keep=0.5, dram_fraction=0.5)),
    ]
    errors = []
    for name, kw in configs:
        lay = {"reorder": "coactivation"} if "co-activation" in name else None
        r = validate(trace, prof, file=work / "dipsim-validate.bin", rounds=a.rounds, tokens=a.tokens, progress=False,
                     layout_opts=lay, **kw)
        errors.append(r["median_error"])
        print(f"{name:40s} measured {r['measured_s_per_token'] * 1e3:8.2f} ms/token  simulated "
              f"{r['simulated_s_per_token'] * 1e3:8.2f} ms/token  median error {r['median_error']:6.1%}  "
              f"rounds {', '.join(f'{e:+.0%}' for e in r['round_median_errors'])}  spread {r['measured_spread']:.0%}  "
              f"({r['requests_per_token']:.0f} requests/token)")
    worst = max(errors)
    print(f"worst median error {worst:.1%} (target <= 15%: {'met' if worst <= 0.15 else 'MISSED'})")
    del traces


if __name__ == "__main__":
    sys.exit(main())
