"""MMLU with the policy in the loop: wall time and accuracies of the issue-20 set of configurations.

    python benchmarks/mmlu.py [--model qwen2.5-0.5b] [--questions-per-topic 10] [--shots 0]
                              [--reset-cache]

Runs ``simulator.accuracy.evaluate_mmlu`` (no result store, in this process) on the stratified
MMLU draw with six configurations: dense, DIP keep 0.5, DIP-CA gamma 0.5 and gamma 0.2 (keep 0.5),
glu-prune keep 0.5 and threshold keep 0.5, each with an LRU cache holding half the MLP, and prints
the wall time (target, issue 20: <= 15 minutes on the 2-core machine for qwen2.5-0.5b at 10
questions per topic) with its breakdown, and every row's accuracy with its Wilson 95% interval and
the paired difference to dense with its 95% interval and McNemar's p. The load average is printed
before and after: other processes on the machine slow the run down.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

CONFIGS = [
    {"masking": "dense"},
    {"masking": "dip", "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.5, "keep": 0.5},
    {"masking": "dip-ca", "gamma": 0.2, "keep": 0.5},
    {"masking": "glu-prune", "keep": 0.5},
    {"masking": "threshold", "keep": 0.5},
]
for _c in CONFIGS:
    _c.update(cache="lru", dram_fraction=0.5)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--questions-per-topic", type=int, default=10)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--reset-cache", action="store_true")
    a = ap.parse_args(argv)

    from common.errors import DipsimError
    from simulator.accuracy import evaluate_mmlu
    from traces.models import load_model

    try:
        print(f"load average before: {_load()} ({os.cpu_count()} cores)", flush=True)
        t0 = time.perf_counter()
        lm = load_model(a.model)
        t_load = time.perf_counter() - t0
        rows = evaluate_mmlu(lm, CONFIGS, questions_per_topic=a.questions_per_topic, shots=a.shots,
                             reset_cache=a.reset_cache, reuse=False, progress=True)
        wall = time.perf_counter() - t0
    except DipsimError as e:
        sys.exit(f"benchmarks/mmlu.py: {e}")
    r0 = rows[0]
    print(f"\n{a.model}: {r0['mmlu_questions']} questions ({a.questions_per_topic} per topic, {a.shots}-shot, cache "
          f"{'reset per question' if a.reset_cache else 'carried across questions'}), {r0['scored_tokens']} masked "
          f"positions per configuration")
    print(f"wall time {wall:.0f} s = {wall / 60:.1f} min (target <= 15 min): model load {t_load:.0f} s, dense "
          f"forward {r0['trace_seconds']:.0f} s, configurations "
          + ", ".join(f"{r['label'].split(' lru')[0]} {r['loop_seconds']:.0f} s (policy {r['select_seconds']:.0f} s)"
                      for r in rows))
    print(f"load average after: {_load()}\n")
    print(f"{'configuration':28s} {'accuracy':>8s} {'95% interval':>16s} {'vs dense':>8s} {'95% interval':>18s} "
          f"{'McNemar p':>9s} {'hit rate':>8s}")
    for r in rows:
        diff = r.get("mmlu_accuracy_diff")
        d = "" if diff is None else f"{diff:+.3f}"
        di = "" if diff is None else f"[{r['mmlu_accuracy_diff_low']:+.3f}, {r['mmlu_accuracy_diff_high']:+.3f}]"
        p = "" if diff is None else f"{r['mmlu_mcnemar_p']:.3f}"
        print(f"{r['label']:28s} {r['mmlu_accuracy']:8.3f} [{r['mmlu_accuracy_low']:.3f}, {r['mmlu_accuracy_high']:.3f}] "
              f"{d:>8s} {di:>18s} {p:>9s} {r['mmlu_hit_rate']:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
