"""Replay + engine end to end on a Llama-3-8B trace from the fitted trace model (dipsim synth):
dip-ca + lru on the UFS 4.0 phone.

    python benchmarks/engine.py [--tokens 1024] [--device phone-12gb-ufs40]

Prints replay and engine seconds (target: together <= 20 s on the 2-core machines), the engine's
events, and its figures, with the speed-up over the dense model on the same device with the same
cache (``speedup_vs_dense``; its replay and engine run after the timed ones); also fine mode (one
SimPy event per request) on the first 16 tokens beside batch mode, to show what the per-request
simulation costs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--device", default="phone-12gb-ufs40")
    a = ap.parse_args()

    import simulator
    from simulator.engine import simulate
    from simulator.sweep.dense import dense_figures, versus_dense
    from traces import synth

    print(f"machine: {os.cpu_count()} cores")
    t0 = time.perf_counter()
    fit, p = synth.Fit.load(), synth.presets.get("llama3-8b")
    trace = synth.generate_trace(fit, p.n_layers, p.d_model, p.d_ff, a.tokens, meta=synth.like_meta("llama3-8b", fit))
    print(f"Llama-3-8B trace from the fitted model, {trace.n_tokens} tokens, Q4_K weights (generated in "
          f"{time.perf_counter() - t0:.1f} s, not timed)")
    small = simulator.replay(trace, "dip-ca", "lru", keep=0.5, dram_fraction=0.5, gamma=0.2, tokens=8, warmup=0)
    simulate(small, a.device)  # compile the kernels once, outside the timing

    t0 = time.perf_counter()
    log = simulator.replay(trace, "dip-ca", "lru", keep=0.5, dram_fraction=0.5, gamma=0.2)
    t_replay = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = simulate(log, a.device)
    t_engine = time.perf_counter() - t0
    s = res.summary()
    total = t_replay + t_engine
    print(f"replay {t_replay:.2f} s + engine {t_engine:.2f} s = {total:.2f} s "
          f"(target <= 20 s: {'met' if total <= 20 else 'MISSED'})")
    print(f"engine: {s['engine_events']} events")
    s["hit_rate"] = log.totals()["hit_rate"]
    dense_log = simulator.replay(trace, "dense", "lru", dram_fraction=0.5)    # the same cache, every column
    dense = simulate(dense_log, a.device).summary()
    s.update(versus_dense(s, dense_figures({**dense, **dense_log.totals()})))
    for k in ("tokens_per_s", "dense_tokens_per_s", "speedup_vs_dense", "analytic_tokens_per_s", "latency_ms_p50",
              "latency_ms_p99", "flash_requests_per_token", "mean_request_bytes", "hit_rate", "speedup_vs_dense_stream",
              "memory_saved_fraction", "fits_in_dram"):
        v = s[k]
        print(f"  {k:>26}: {v:.4g}" if isinstance(v, float) else f"  {k:>26}: {v}")

    part = simulator.replay(trace, "dip-ca", "lru", keep=0.5, dram_fraction=0.5, gamma=0.2, tokens=16, warmup=2)
    t0 = time.perf_counter()
    b = simulate(part, a.device).summary()
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    f = simulate(part, a.device, mode="fine").summary()
    tf = time.perf_counter() - t0
    print(f"16 tokens: batch {tb:.2f} s ({b['engine_events']} events), fine {tf:.2f} s ({f['engine_events']} events, "
          f"{f['engine_events'] / tf:,.0f} events/s); tokens/s batch {b['tokens_per_s']:.3f} vs fine "
          f"{f['tokens_per_s']:.3f} ({abs(f['tokens_per_s'] / b['tokens_per_s'] - 1):.2e} apart)")


if __name__ == "__main__":
    sys.exit(main())
