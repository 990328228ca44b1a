"""What masking costs in accuracy, closed loop, on SmolLM2 over the default corpus: a markdown table.

    python benchmarks/accuracy_table.py [--tokens 1024] [--model smollm2-135m] [--no-reuse]

Configurations (all with an LRU DRAM cache holding 50% of the MLP weights, uniform allocation):
dense; glu-prune keep 0.5; dip keep 0.75 and 0.5; dip-ca keep 0.5 with gamma 1, 0.5, 0.2, 0. They
run in one batched closed-loop pass (``simulator.accuracy.evaluate``); results are cached on disk,
so a rerun prints at once (``--no-reuse`` recomputes). Columns: perplexity over the scored text
tokens and its change against dense, mean KL(dense || config) in nats, top-1 agreement with dense,
closed-loop hit rate (by bytes, after the warm-up) beside the open-loop one (replay of the dense
trace), and flash MB read per token, closed and open loop.
"""
from __future__ import annotations

import argparse
import sys
import time

CONFIGS = [
    {"masking": "dense"},
    {"masking": "glu-prune", "keep": 0.5},
    {"masking": "dip", "keep": 0.75},
    {"masking": "dip", "keep": 0.5},
    {"masking": "dip-ca", "gamma": 1.0, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.5, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.0, "keep": 0.5},
]
for _c in CONFIGS:
    _c.update(cache="lru", dram_fraction=0.5, allocation="uniform")


def markdown(results) -> str:
    dense = results[0]["dense_perplexity"]
    head = ("| configuration | perplexity | Δ ppl vs dense | KL to dense (nats) | top-1 agreement | hit rate closed "
            "| hit rate open | flash MB/token closed | flash MB/token open |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['perplexity']:.3f} | {100 * (r['perplexity'] / dense - 1):+.1f}% | "
                     f"{r['kl_to_dense']:.4f} | {r['top1_agreement']:.3f} | {r['hit_rate']:.3f} | "
                     f"{r['open_loop_hit_rate']:.3f} | {r['flash_bytes_per_token'] / 1e6:.2f} | "
                     f"{r['open_loop_flash_bytes_per_token'] / 1e6:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--no-reuse", action="store_true", help="recompute, and neither read nor write the result cache")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args()

    from simulator.accuracy import evaluate

    t0 = time.perf_counter()
    res = evaluate(a.model, CONFIGS, tokens=a.tokens, reuse=not a.no_reuse, progress=not a.quiet)
    dt = time.perf_counter() - t0
    r = res[0]
    print(f"{r['model']} on {r['corpus']} ({r['corpus_digest'][:19]}...): {r['tokens']} scored tokens (BOS + "
          f"{a.tokens} text tokens, one context window, token by token with the KV cache), dense perplexity "
          f"{r['dense_perplexity']:.3f}; LRU cache with 50% of the MLP weights in DRAM, uniform allocation; hit "
          f"rates by bytes over {r['cache_tokens']} tokens after a warm-up of {r['warmup']}; "
          f"{r['batch_rows']} batch rows in one pass\n")
    print(markdown(res))
    cached = sum(x["from_cache"] for x in res)
    print(f"\n{time.perf_counter() - t0:.0f} s wall ({dt:.0f} s in evaluate"
          + (f"; {cached} of {len(res)} results from the disk cache" if cached else "") + ")", file=sys.stderr)


if __name__ == "__main__":
    main()
