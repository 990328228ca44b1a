"""Search speed: a search's trials with the model and dense pass kept per process against the same trials
each loading the model and running the dense forward again (as every trial did before
``accuracy.session``), side by side in one run.

    python benchmarks/search_speed.py [--model smollm2-135m] [--tokens 1024] [--trials 40]
                                      [--sides before after] [--out out/bench-search-speed]

The search is ``experiments/search.yaml`` (masking among dip, dip-ca, glu-prune and threshold, keep_up
and keep_down apart, gamma, the DRAM budget; paper-a18; +10% perplexity) on ``--model`` over
``--tokens`` tokens, ``--trials`` trials, one process (``--jobs 1``). ``before``: each trial drops
what the process keeps first (``accuracy.session.release``), so it loads the model, runs the dense
forward and scores the dense row again; ``after``: as ``dipsim optimize`` runs. Each side has its own
empty accuracy store (a cache folder that links the real one's models, traces and compiled kernels),
so every trial runs its closed loop on both sides; the same seed draws the same trials, whose metrics
must agree exactly (checked, printed). Prints each side's wall time, seconds per trial, peak memory
of the process and the load, and the ratio; the issue's targets: 40 trials of SmolLM2 over 1024
tokens within 5 minutes, of Qwen2.5-Coder-1.5B over 512 tokens within 20 minutes.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {("smollm2-135m", 1024): 5 * 60, ("qwen2.5-coder-1.5b", 512): 20 * 60}
LINKED = ("models", "gguf", "traces", "numba")


def search_file(model: str, tokens: int, trials: int, folder: Path) -> Path:
    doc = yaml.safe_load((ROOT / "experiments" / "search.yaml").read_text())
    doc["name"] = f"speed-{model}-{tokens}"
    doc["trace"] = {"model": model, "tokens": tokens}
    doc["search"]["trials"] = trials
    p = folder / f"{doc['name']}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def side_cache(real: Path, folder: Path) -> Path:
    """A cache folder of its own (an empty accuracy store) linking the real one's models and traces."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in LINKED:
        if (real / name).exists():
            (folder / name).symlink_to(real / name)
    return folder


def evaluate_fresh(cfg, dense):
    """A trial as before the session: nothing kept from the previous trial."""
    from simulator.accuracy import session
    from simulator.search.study import evaluate_point

    session.release()
    return evaluate_point(cfg, dense)


def run_side(side: str, search, out: Path, real: Path) -> dict:
    from simulator.accuracy import session
    from simulator.search import run_search, trials_table
    from simulator.search.study import evaluate_point

    os.environ["DIPSIM_CACHE_DIR"] = str(side_cache(real, out / f"cache-{side}"))
    session.release()
    load0 = os.getloadavg()[0]
    t0 = time.time()
    study = run_search(search, out / side, progress=True, log=lambda m: None,
                       evaluate=evaluate_fresh if side == "before" else evaluate_point)
    wall = time.time() - t0
    df = trials_table(search, study).set_index("trial")
    os.environ["DIPSIM_CACHE_DIR"] = str(real)
    return {"wall": wall, "n": len(df), "df": df, "load": (load0, os.getloadavg()[0]),
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def same_metrics(a, b) -> str:
    cols = [c for c in a.columns if c.startswith("m.") and "seconds" not in c and c in b.columns]
    both = a.index.intersection(b.index)
    diff = [(t, c) for t in both for c in cols if not (a.at[t, c] == b.at[t, c] or (a.at[t, c] != a.at[t, c]
                                                                                  and b.at[t, c] != b.at[t, c]))]
    return (f"the {len(both)} trials' {len(cols)} metrics agree exactly" if not diff else
            f"{len(diff)} metric values differ, first: trial {diff[0][0]} {diff[0][1]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--sides", nargs="+", choices=["before", "after"], default=["before", "after"])
    ap.add_argument("--out", default="out/bench-search-speed")
    a = ap.parse_args()
    import torch

    from common.io import cache_root
    from simulator.search import load_search
    from simulator.sweep.execute import trace_for

    out = Path(a.out) / f"{a.model}-{a.tokens}-{a.trials}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    real = cache_root()
    search = load_search(search_file(a.model, a.tokens, a.trials, out))
    trace_for(search.point({}).config.trace, progress=True)      # captured once, outside the timings
    print(f"{a.model}, {a.tokens} tokens, {a.trials} trials of experiments/search.yaml, one process; "
          f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.1f}",
          flush=True)
    res = {}
    for side in a.sides:
        res[side] = r = run_side(side, search, out, real)
        print(f"{side:>6}: {r['n']} trials in {r['wall']:.0f} s ({r['wall'] / max(r['n'], 1):.1f} s per trial), "
              f"peak RSS so far {r['rss']:.2f} GiB, load {r['load'][0]:.1f} -> {r['load'][1]:.1f}", flush=True)
    target = TARGETS.get((a.model, a.tokens))
    if "after" in res and target and a.trials == 40:
        w = res["after"]["wall"]
        print(f"target: 40 trials within {target / 60:.0f} min: {w / 60:.1f} min, "
              f"{'met' if w <= target else f'NOT met (by {(w - target) / 60:.1f} min)'}")
    if len(res) == 2:
        b, f = res["before"], res["after"]
        print(f"after / before: {f['wall'] / b['wall']:.2f} of the time ({b['wall'] / f['wall']:.2f}x faster); "
              f"{same_metrics(b['df'], f['df'])}")
    shutil.rmtree(out / "cache-before", ignore_errors=True)
    shutil.rmtree(out / "cache-after", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
