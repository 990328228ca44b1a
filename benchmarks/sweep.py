"""Sweep throughput: expanding a 10,000-point design space, and a 100-point sweep over a 1024-token
SmolLM2 trace with the local executor.

    python benchmarks/sweep.py [--subset 12]

Expansion: load_experiment on a 10 x 10 x 10 x 10 grid (gamma, keep, dram_fraction, device x
engine.overlap_io), every point checked whole (target <= 5 s). Sweep: every point is a full replay
(dip-ca, LRU) plus the engine on a device profile; prints the 100-point sweep with 2 workers (target
<= 60 s on the 2-core machines) and points per minute for 1 and 2 workers, measured side by side on
the same subset of points. Wall and CPU seconds are both printed: on a shared machine the wall time
carries the neighbours' load.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml


def experiment(path: Path, gammas: list[float], fractions: list[float], devices: list[str]) -> Path:
    path.write_text(yaml.safe_dump({
        "name": path.stem,
        "trace": {"model": "smollm2-135m", "tokens": 1024},
        "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru"},
        "grid": {"device": devices, "dram_fraction": fractions, "gamma": gammas},
    }, sort_keys=False))
    return path


def expansion(path: Path) -> tuple[float, float, int]:
    from simulator.sweep import load_experiment

    devices = ["phone-12gb-ufs40", "phone-8gb-ufs40", "phone-old-ufs31", "laptop-ddr5-nvme4", "apple-m2"]
    tenths = [round(0.1 * i, 1) for i in range(1, 11)]
    path.write_text(yaml.safe_dump({
        "name": path.stem,
        "trace": {"model": "smollm2-135m", "tokens": 1024},
        "base": {"masking": "dip-ca", "cache": "lru"},
        "grid": {"gamma": [round(g - 0.1, 1) for g in tenths], "keep": tenths, "dram_fraction": tenths,
                 "device": devices, "engine.overlap_io": [True, False]},
    }, sort_keys=False))
    w, c = time.perf_counter(), time.process_time()
    exp = load_experiment(path)
    return time.perf_counter() - w, time.process_time() - c, len(exp.points)


def run(path: Path, out: Path, jobs: int) -> tuple[float, int]:
    from simulator.sweep import load_experiment, run_sweep

    exp = load_experiment(path)
    t0 = time.perf_counter()
    run_sweep(exp, out, jobs=jobs, progress=False, log=lambda s: None)
    return time.perf_counter() - t0, len(exp.points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=12, help="points for the 1- vs 2-worker comparison")
    a = ap.parse_args()
    from simulator.config import TraceSpec
    from simulator.sweep import trace_for

    trace_for(TraceSpec(model="smollm2-135m", tokens=1024))  # captured once (cached), not timed
    with tempfile.TemporaryDirectory(prefix="dipsim-sweep-bench-") as tmp:
        tmp = Path(tmp)
        ew, ec, en = expansion(tmp / "space.yaml")
        print(f"expansion of {en} points: {ew:.2f} s wall, {ec:.2f} s CPU (target <= 5 s: {'met' if ew <= 5 else 'MISSED'})",
              flush=True)
        gammas = [round(0.1 * i, 1) for i in range(10)]
        full = experiment(tmp / "full.yaml", gammas, [0.2, 0.35, 0.5, 0.65, 0.8], ["phone-12gb-ufs40", "laptop-ddr5-nvme4"])
        sub = experiment(tmp / "subset.yaml", gammas[: a.subset // 2], [0.5], ["phone-12gb-ufs40", "phone-old-ufs31"])
        t1, n1 = run(sub, tmp / "s1", 1)
        t2, n2 = run(sub, tmp / "s2", 2)
        tf, nf = run(full, tmp / "full", 2)
    print(f"machine: {os.cpu_count()} cores; points = dip-ca + LRU replay of 1024 SmolLM2 tokens + engine")
    print(f"subset of {n1} points: 1 worker {n1 / t1 * 60:.1f} points/min, 2 workers {n2 / t2 * 60:.1f} points/min "
          f"(x{t1 / t2:.2f})")
    print(f"{nf}-point sweep, 2 workers: {tf:.0f} s = {nf / tf * 60:.1f} points/min "
          f"(target <= 60 s: {'met' if tf <= 60 else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
