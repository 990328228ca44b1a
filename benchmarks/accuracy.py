"""Closed-loop evaluation speed: 8 configurations in one batched run vs 1 configuration alone.

    python benchmarks/accuracy.py [--tokens 1024] [--model smollm2-135m] [--repeat 1] [--batched-gemm]

Both runs evaluate the same tokens with ``simulator.accuracy.evaluate`` (no result cache), side
by side in this process; each run also holds the dense reference row, so "1 configuration" is a
batch of 2 rows and "8 configurations" a batch of 9. Prints the machine facts, both wall times with
their breakdown (dense trace, closed loop, mask selection inside it, open-loop replays), the
per-token times and the ratio (target: 8 configurations <= 3x one). The load average is printed
around each run: other processes on the machine slow a run down and skew the ratio. With
``--repeat N`` the two runs alternate N times and the best time of each is used.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ALONE = [{"masking": "dip-ca", "gamma": 0.2, "keep": 0.5, "cache": "lru", "dram_fraction": 0.5}]
EIGHT = [
    {"masking": "glu-prune", "keep": 0.5},
    {"masking": "dip", "keep": 0.75},
    {"masking": "dip", "keep": 0.5},
    {"masking": "dip-ca", "gamma": 1.0, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.5, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.0, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.2, "keep": 0.75},
]
for _c in EIGHT:
    _c.update(cache="lru", dram_fraction=0.5)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two runs this many times (best of)")
    ap.add_argument("--batched-gemm", action="store_true",
                    help="evaluate with batch_invariant=False (batched GEMMs instead of row-by-row linears)")
    a = ap.parse_args()

    import torch

    from simulator.accuracy import evaluate
    from traces.models import load_model

    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(interop {torch.get_num_interop_threads()}); python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    lm = load_model(a.model, verbose=False)
    print(f"model: {lm.info.model}, {lm.info.n_layers} layers, d_model {lm.info.d_model}, d_ff {lm.info.d_ff} "
          f"(loaded in {time.perf_counter() - t0:.1f} s, not timed below)")
    kw = dict(tokens=a.tokens, reuse=False, batch_invariant=not a.batched_gemm)
    evaluate(lm, ALONE, **{**kw, "tokens": 8, "warmup": 0})  # warm up (kernels, allocator), not timed
    print(f"mode: {'batched GEMMs' if a.batched_gemm else 'batch-invariant (row-by-row linears)'}; "
          f"{a.tokens} tokens; 1 config = {ALONE[0]['masking']} gamma {ALONE[0]['gamma']}; "
          f"8 configs = glu-prune, dip x2, dip-ca x5")

    best: dict[str, tuple[float, dict]] = {}
    for rep in range(a.repeat):
        for name, cfgs in (("1 config", ALONE), ("8 configs", EIGHT)):
            load0 = _load()
            t = time.perf_counter()
            res = evaluate(lm, cfgs, **kw)
            dt = time.perf_counter() - t
            r = res[0]
            print(f"  [{rep + 1}/{a.repeat}] {name:9s}: {dt:7.1f} s  ({r['batch_rows']} rows; trace "
                  f"{r['trace_seconds']:.1f} s, loop {r['loop_seconds']:.1f} s of which mask selection "
                  f"{r['select_seconds']:.1f} s, open-loop replays {sum(x['open_loop_seconds'] for x in res):.1f} s)"
                  f"  load avg {load0} -> {_load()}")
            if name not in best or dt < best[name][0]:
                best[name] = (dt, r)
    t1, r1 = best["1 config"]
    t8, r8 = best["8 configs"]
    n = r1["tokens"] + (1 if r1["prefill"] == 0 else 0)
    print(f"1 config : {t1:7.1f} s  ({1000 * r1['loop_seconds'] / n:.0f} ms per decoded token)")
    print(f"8 configs: {t8:7.1f} s  ({1000 * r8['loop_seconds'] / n:.0f} ms per decoded token, "
          f"{t8 / 8:.1f} s per configuration)")
    ratio = t8 / t1
    print(f"ratio 8 configs / 1 config: {ratio:.2f}x  (target <= 3x: {'met' if ratio <= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
