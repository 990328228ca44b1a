"""Closed-loop evaluation speed: the layer-wise loop against the token-by-token loop, side by side.

    python benchmarks/accuracy.py [--model smollm2-135m] [--tokens 1024] [--token-loop-tokens 128]
                                  [--configs 8] [--skip-token-loop]

Runs the same configurations (8 by default: glu-prune, dip at keep 0.75 and 0.5, dip-ca at gamma
1, 0.5, 0.2, 0 and gamma 0.2 at keep 0.75; LRU holding half the MLP) through
``simulator.accuracy.evaluate`` with ``loop="layer"`` and ``loop="token"``, no result store, in this
process, and prints the wall times with their breakdown (dense trace, closed loop, policy and cache
stepping inside it) and the speed-up per token. The token loop costs about a second per token, so
by default it runs a shorter prefix of the same text (``--token-loop-tokens``) and its time is
compared per token; ``--token-loop-tokens 0`` runs it on the full length. Targets (issue #10):
SmolLM2, 8 configurations x 1024 tokens, layer-wise <= 30 s and >= 6x faster than the token loop;
Qwen2.5-Coder-1.5B, 4 configurations x 512 tokens, <= 5 minutes. The load average is printed
around each run: other processes on the machine slow a run down.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

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


def _run(lm, cfgs, tokens: int, loop: str) -> tuple[float, list]:
    from simulator.accuracy import evaluate

    print(f"  {loop} loop, {len(cfgs)} configurations x {tokens} tokens (load {_load()}) ...", flush=True)
    t0 = time.perf_counter()
    res = evaluate(lm, cfgs, tokens=tokens, loop=loop, reuse=False)
    dt = time.perf_counter() - t0
    r = res[0]
    print(f"    {dt:7.1f} s wall: dense trace {r['trace_seconds']:.1f} s, closed loop {r['loop_seconds']:.1f} s "
          f"(policies + caches {r['select_seconds']:.1f} s), {1e3 * dt / tokens:.0f} ms per token "
          f"(load after {_load()})", flush=True)
    return dt, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--configs", type=int, default=8, help="how many of the eight configurations (default 8)")
    ap.add_argument("--token-loop-tokens", type=int, default=128,
                    help="tokens for the token-by-token loop (0: the same as --tokens; default 128)")
    ap.add_argument("--skip-token-loop", action="store_true")
    a = ap.parse_args()

    import torch

    from traces.models import load_model

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    lm = load_model(a.model)
    print(f"model {a.model}: {lm.info.n_layers} layers, d_model {lm.info.d_model}, d_ff {lm.info.d_ff} "
          f"(loaded in {time.perf_counter() - t0:.1f} s)")
    cfgs = EIGHT[: a.configs]
    _run(lm, cfgs, 32, "layer")       # compile every configuration's kernels once, outside the timings
    layer_s, layer_res = _run(lm, cfgs, a.tokens, "layer")
    print(f"{'configuration':42s} {'perplexity':>10s} {'KL':>7s} {'top-1':>6s} {'hit rate':>8s}")
    for r in layer_res:
        print(f"{r['label']:42s} {r['perplexity']:10.3f} {r['kl_to_dense']:7.3f} {r['top1_agreement']:6.3f} "
              f"{r['closed_loop_hit_rate']:8.3f}")
    if a.skip_token_loop:
        return
    tt = a.token_loop_tokens or a.tokens
    token_s, _ = _run(lm, cfgs, tt, "token")
    per_layer, per_token = layer_s / a.tokens, token_s / tt
    print(f"layer-wise: {layer_s:.1f} s for {a.tokens} tokens; token loop: {token_s:.1f} s for {tt} tokens; "
          f"per token {1e3 * per_layer:.1f} vs {1e3 * per_token:.1f} ms: the layer-wise loop is "
          f"{per_token / per_layer:.1f}x faster (target >= 6x{'' if tt == a.tokens else ', per token'})")


if __name__ == "__main__":
    main()
