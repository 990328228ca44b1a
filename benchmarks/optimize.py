"""Search against the shipped grids at the same number of closed-loop evaluations.

    python benchmarks/optimize.py [--tokens 1024] [--devices paper-a18 phone-12gb-ufs40] [--seed 0]

For SmolLM2-135M over --tokens tokens of the default corpus and a budget of +10% perplexity over the
dense model: the shipped grids ``experiments/gamma.yaml`` (21 points) and ``experiments/sparsity.yaml``
(36 points) run on each device (their own base otherwise), and the best feasible point of the two
together is set against the best feasible trial of a ``dipsim optimize`` search given the same number
of trials (57): masking among dense, dip, dip-ca, glu-prune, threshold and static, keep_up and
keep_down apart, gamma, and the DRAM budget within the grids' own range (0.25-0.75 of the MLP); LRU
as in the grids; one objective, tokens/s, under the constraint. Every point and trial runs replay,
the device engine and the closed loop on the real model (accuracy store shared, so a configuration
both measured costs once). Prints per device the two bests, their designs and the ratio; the issue's
targets: >= 1.15x on paper-a18, never worse on the phone (and where the dense model is the answer,
it says so). Folders under --out are kept, so a rerun resumes (the study and the sweeps).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GRIDS = ("gamma", "sparsity")
SPACE = {"masking": ["dense", "dip", "dip-ca", "glu-prune", "threshold", "static"],
         "keep_up": {"low": 0.2, "high": 1.0}, "keep_down": {"low": 0.2, "high": 1.0},
         "gamma": {"low": 0.0, "high": 1.0}, "dram_fraction": {"low": 0.25, "high": 0.75}}
BUDGET = 0.10


def grid_file(name: str, device: str, tokens: int, folder: Path) -> Path:
    doc = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    doc["trace"]["tokens"] = tokens
    doc["base"]["device"] = device
    doc["name"] = f"{name}-{device}-{tokens}"
    p = folder / f"{doc['name']}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def search_file(device: str, tokens: int, trials: int, seed: int, folder: Path) -> Path:
    doc = {"name": f"search-{device}-{tokens}", "trace": {"model": "smollm2-135m", "tokens": tokens},
           "base": {"cache": "lru", "device": device, "accuracy": True},
           "search": {"space": SPACE, "objectives": {"tokens_per_s": "max"},
                      "constraints": {"max_perplexity_increase": BUDGET}, "trials": trials, "sampler": "tpe",
                      "seed": seed}}
    p = folder / f"{doc['name']}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def feasible_best(df):
    ok = df[df["m.perplexity"] <= df["m.dense_perplexity"] * (1 + BUDGET) + 1e-12]
    return None if not len(ok) else ok.loc[ok["m.tokens_per_s"].idxmax()]


def design(r) -> str:
    keys = ("p.masking", "p.keep", "p.keep_up", "p.keep_down", "p.gamma", "p.dram_fraction")
    parts = []
    for k in keys:
        v = r.get(k)
        if v is None or (isinstance(v, float) and v != v):
            continue
        parts.append(f"{k[2:]}={v:.3g}" if isinstance(v, float) else f"{k[2:]}={v}")
    return " ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--devices", nargs="+", default=["paper-a18", "phone-12gb-ufs40"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, help="search trials (default: the grids' point count together, 57)")
    ap.add_argument("--out", default="out/bench-optimize")
    a = ap.parse_args()
    from simulator.search import load_search, run_search, trials_table
    from simulator.sweep import load_experiment, load_results, run_sweep

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load {os.getloadavg()[0]:.1f} at start; SmolLM2-135M, {a.tokens} tokens, budget +{BUDGET:.0%} perplexity "
          f"over dense", flush=True)
    lines = []
    for dev in a.devices:
        t0 = time.time()
        grid_rows, n_points = [], 0
        for g in GRIDS:
            exp = load_experiment(grid_file(g, dev, a.tokens, out))
            n_points += len(exp.points)
            run_sweep(exp, out / exp.name, progress=False, log=lambda s: None)
            grid_rows.append(load_results(out / exp.name))
        t_grid = time.time() - t0
        import pandas as pd

        grid = pd.concat(grid_rows, ignore_index=True)
        s = load_search(search_file(dev, a.tokens, a.trials or n_points, a.seed, out))
        t0 = time.time()
        study = run_search(s, out / s.exp.name, progress=False, log=lambda m: None)
        t_search = time.time() - t0
        df = trials_table(s, study)
        gb, sb = feasible_best(grid), feasible_best(df)
        lines.append((dev, n_points, len(df), gb, sb, t_grid, t_search))
        print(f"{dev}: grids {n_points} points in {t_grid:.0f} s, search {len(df)} trials in {t_search:.0f} s "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print()
    for dev, n_points, n_trials, gb, sb, _, _ in lines:
        g = gb["m.tokens_per_s"] if gb is not None else float("nan")
        v = sb["m.tokens_per_s"] if sb is not None else float("nan")
        print(f"{dev}:")
        print(f"  grids  ({n_points} points): best feasible {g:.4g} tokens/s"
              + (f" [{design(gb)}], speedup_vs_dense {gb['m.speedup_vs_dense']:.3g}" if gb is not None else ""))
        print(f"  search ({n_trials} trials): best feasible {v:.4g} tokens/s"
              + (f" [{design(sb)}], speedup_vs_dense {sb['m.speedup_vs_dense']:.3g}" if sb is not None else ""))
        ratio = v / g
        target = 1.15 if dev == "paper-a18" else 1.0
        print(f"  search / grids: {ratio:.3f}x (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})")
        for name, r in (("grids", gb), ("search", sb)):
            if r is not None and (r.get("p.masking") == "dense" or r["m.speedup_vs_dense"] <= 1.0 + 1e-9):
                print(f"  the {name}' best is the dense model's speed (speedup_vs_dense "
                      f"{r['m.speedup_vs_dense']:.3g}): on {dev} dense is the answer within the budget")
    print(f"\nload {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
