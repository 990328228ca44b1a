"""The block length of the accuracy intervals: how far per-position figures stay correlated.

    python benchmarks/intervals.py [--model smollm2-135m] [--tokens 1024] [--max-lag 64]

Runs the dense model and DIP keep 0.5 (LRU holding half the MLP) in the closed loop on the default
corpus (``simulator.accuracy.evaluate``, details, no result store) and prints, for the dense
per-position NLL and for the paired difference DIP minus dense:

* the sample autocorrelation at lags 1, 2, 4, ..., ``--max-lag``;
* the bootstrap standard error of the mean for blocks of 1, 2, 4, ..., 128 positions (circular
  block bootstrap, ``simulator.accuracy.intervals.block_indices``, 2000 resamples), beside the
  i.i.d. formula sd / sqrt(n). The standard error grows with the block while the blocks are shorter
  than the correlation and levels off once they hold it; ``intervals.BLOCK`` is chosen there.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--max-lag", type=int, default=64)
    a = ap.parse_args(argv)

    import numpy as np

    from common.errors import DipsimError
    from simulator.accuracy import evaluate
    from simulator.accuracy.intervals import BLOCK, autocorrelation, block_indices

    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    try:
        dense, dip = evaluate(a.model, [{"masking": "dense"}, {"masking": "dip", "keep": 0.5, "cache": "lru",
                                                                "dram_fraction": 0.5}],
                              tokens=a.tokens, reuse=False, details=True)
    except DipsimError as e:
        sys.exit(f"benchmarks/intervals.py: {e}")
    series = {"dense NLL": dense["details"]["nll"], "DIP 0.5 - dense NLL": dip["details"]["nll"] - dense["details"]["nll"]}
    n = len(series["dense NLL"])
    lags = [k for k in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128) if k <= a.max_lag]
    blocks = [b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < n]
    print(f"\n{a.model}, {n} scored positions of the default corpus; dipsim's block length: {BLOCK}")
    for name, x in series.items():
        acf = autocorrelation(x, max(lags))
        print(f"\n{name}: mean {x.mean():.4f}, sd {x.std():.4f}")
        print("  autocorrelation  " + "  ".join(f"lag {k}: {acf[k]:+.3f}" for k in lags))
        print(f"  mean of lags 1-16: {acf[1:17].mean():+.3f}, 17-32: {acf[17:33].mean():+.3f}, "
              f"33-64: {acf[33:65].mean():+.3f}" if len(acf) > 64 else "")
        iid = x.std(ddof=1) / np.sqrt(n)
        ses = [float(x[block_indices(n, b, 2000, seed=0)].mean(axis=1).std()) for b in blocks]
        print(f"  bootstrap s.e. of the mean (i.i.d. formula {iid:.4f}):  "
              + "  ".join(f"block {b}: {s:.4f} ({s / iid:.2f}x)" for b, s in zip(blocks, ses)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
