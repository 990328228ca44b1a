"""Per-layer keep schedules against uniform keep at the same mean, in the closed loop (issue 18 §2).

    python benchmarks/schedules.py [--run smollm2-135m:1024] [--run qwen2.5-0.5b:512] [--mean 0.5]
                                   [--gamma 0.2]

For each model and number of text tokens (default: SmolLM2-135M over 1024 tokens and Qwen2.5-0.5B
over 512), and for DIP and DIP-CA (gamma ``--gamma``), with LRU holding half the MLP, runs in one
closed-loop evaluation (``simulator.accuracy.evaluate``, no result store, per-position figures):

* ``uniform``      keep ``--mean`` in every layer and group;
* ``owl``          the outlier-weighted rule (lam 0.05, m 5: its best on SmolLM2 at mean 0.5);
* ``greedy/group`` keep_up and keep_down each a greedy schedule of mean ``--mean`` (within the group);
* ``split``        uniform keeps, up/gate and down at the means the joint greedy gives them (the
                   same weights read): what the split between the groups alone does;
* ``greedy``       one greedy keep of mean ``--mean``, allocated over layers and both groups by weight
                   (error measure ``fisher``, the default);
* ``greedy/resid`` the same with the error measure ``residual`` (no gradient: the change of the hidden
                   state relative to its size).

Prints per row perplexity and KL to dense with their 95% intervals (block bootstrap), the paired
relative change of each against uniform on the same positions with its interval, top-1 agreement, the
MLP bytes read per token and the closed-loop flash bytes per token (so that "same mean keep, same
flash bytes" is visible), then the greedy keeps per layer. The greedy's error curves are measured once
per model on the calibration text (the default corpus's tail, apart from the evaluated text: its
first tokens) and cached; the first run pays for them (a few minutes on the 2-core machine). The
issue's target: KL to dense at least 15% below uniform DIP at mean keep 0.5, on both models.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def configs(model: str, mean: float, gamma: float) -> list[dict]:
    from simulator import schedules
    from traces.models import load_model

    greedy = schedules.check({"rule": "greedy", "mean": mean}, "keep")
    lm = load_model(model, verbose=False)
    info = lm.info
    joint = schedules.resolve_joint(greedy, info.n_layers, model, (2.0, 1.0))
    up, down = float(np.mean(joint["upgate"])), float(np.mean(joint["down"]))
    rows = []
    for method, extra in (("dip", {}), ("dip-ca", {"gamma": gamma})):
        base = {"masking": method, **extra, "cache": "lru", "dram_fraction": 0.5}
        rows += [
            {**base, "keep": mean, "label": f"{method} uniform"},
            {**base, "keep": {"rule": "owl", "mean": mean, "lam": 0.05, "m": 5.0}, "label": f"{method} owl"},
            {**base, "keep_up": greedy, "keep_down": greedy, "label": f"{method} greedy/group"},
            {**base, "keep_up": round(up, 4), "keep_down": round(down, 4), "label": f"{method} split"},
            {**base, "keep": greedy, "label": f"{method} greedy"},
            {**base, "keep": {**greedy, "error": "residual"}, "label": f"{method} greedy/resid"},
        ]
    return rows, lm, joint


def run(model: str, tokens: int, mean: float, gamma: float) -> None:
    from simulator.accuracy import evaluate
    from simulator.accuracy.intervals import paired_change

    rows, lm, joint = configs(model, mean, gamma)
    print(f"\n{model}, {tokens} tokens, mean keep {mean} (load {_load()}) ...", flush=True)
    t0 = time.perf_counter()
    res = evaluate(lm, rows, tokens=tokens, reuse=False, details=True)
    secs = time.perf_counter() - t0
    print(f"{len(rows)} closed loops in {secs:.0f} s (load {_load()}); dense perplexity {res[0]['dense_perplexity']:.3f}")
    head = (f"{'configuration':<20} {'perplexity [95%]':>22} {'vs uniform [95%]':>24} {'KL to dense [95%]':>24} "
            f"{'vs uniform [95%]':>24} {'top-1':>6} {'MLP B/tok':>10} {'flash B/tok':>11}")
    print(head)
    print("-" * len(head))
    for r in res:
        ref = res[0] if r["config"]["masking"] == "dip" else res[len(res) // 2]
        d, dr = r["details"], ref["details"]
        p, plo, phi = paired_change(d["nll"], dr["nll"], exp=True)
        k, klo, khi = paired_change(d["kl"], dr["kl"])
        same = r is ref
        print(f"{r['label']:<20} {r['perplexity']:>7.2f} [{r['perplexity_low']:6.2f}, {r['perplexity_high']:6.2f}] "
              f"{'' if same else f'{p:+7.1%} [{plo:+6.1%}, {phi:+6.1%}]':>24} "
              f"{r['kl_to_dense']:>7.4f} [{r['kl_to_dense_low']:.4f}, {r['kl_to_dense_high']:.4f}] "
              f"{'' if same else f'{k:+7.1%} [{klo:+6.1%}, {khi:+6.1%}]':>24} {r['top1_agreement']:>6.3f} "
              f"{r['mlp_bytes_per_token']:>10.4g} {r['closed_loop_flash_bytes_per_token']:>11.4g}")
    for g in ("upgate", "down"):
        print(f"greedy keeps, {g} (mean {np.mean(joint[g]):.3f}): " + " ".join(f"{v:.2f}" for v in joint[g]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", metavar="MODEL:TOKENS",
                    help="a model and its number of text tokens (repeatable; default smollm2-135m:1024 and "
                         "qwen2.5-0.5b:512)")
    ap.add_argument("--mean", type=float, default=0.5, help="mean keep (default 0.5)")
    ap.add_argument("--gamma", type=float, default=0.2, help="DIP-CA's gamma (default 0.2)")
    a = ap.parse_args()
    for spec in a.run or ["smollm2-135m:1024", "qwen2.5-0.5b:512"]:
        model, _, tokens = spec.rpartition(":")
        run(model, int(tokens), a.mean, a.gamma)


if __name__ == "__main__":
    main()
