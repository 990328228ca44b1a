#!/usr/bin/env python3
"""Write the plotting notebooks of notebooks/ (without outputs).

    .venv/bin/python notebooks/_make.py            # (re)write the three .ipynb files, outputs cleared
    .venv/bin/python notebooks/_make.py --execute  # ... then run them in place, full size (minutes)
    DIPSIM_NB_SMALL=1 .venv/bin/python notebooks/_make.py --execute   # ... the tiny configuration

The notebooks are the source of truth once written; this script only keeps them regenerable and
consistent (the same parameter cell and set-up in all three). tests/test_notebooks.py executes them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def params_cell(name: str):
    src = f'''# Parameters. The tests set them through the environment (nbclient does no papermill-style injection):
#   DIPSIM_NB_SMALL=1 -> SMALL = True, DIPSIM_NB_RESULTS=DIR -> RESULTS = DIR, DIPSIM_NB_OUT=DIR -> OUT = DIR
import os

RESULTS = os.environ.get("DIPSIM_NB_RESULTS") or None  # a sweep results directory to read instead of running one
SMALL = os.environ.get("DIPSIM_NB_SMALL", "0") == "1"   # True: a tiny sweep (128 tokens, a few points) for the tests
OUT = os.environ.get("DIPSIM_NB_OUT") or "out/notebooks/{name}"  # where the experiment and its sweep are written
JOBS = int(os.environ.get("DIPSIM_NB_JOBS", "2"))       # worker processes for the full-size sweep'''
    c = new_code_cell(src)
    c.metadata["tags"] = ["parameters"]
    return c


SETUP = '''%matplotlib inline
import platform
import time
from pathlib import Path

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from simulator import plots
from simulator.sweep import load_experiment, load_results, run_sweep


def repo_root() -> Path:
    """The dipsim checkout at or above the working directory (relative paths are taken from there)."""
    for d in (Path.cwd(), *Path.cwd().parents):
        if (d / "pyproject.toml").is_file() and (d / "simulator").is_dir():
            return d
    return Path.cwd()


ROOT = repo_root()


def in_root(p) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else ROOT / p


def sweep(experiment: dict) -> Path:
    """Write ``experiment`` as YAML under OUT, run it (resuming finished points) and return the results directory."""
    out = in_root(OUT)
    out.mkdir(parents=True, exist_ok=True)
    tag = "-small" if SMALL else ""
    exp_path = out / f"{experiment['name']}{tag}.yaml"
    exp_path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    exp = load_experiment(exp_path)
    results = out / f"{experiment['name']}{tag}"  # the name keeps notebooks that share an OUT apart
    t0 = time.perf_counter()
    run_sweep(exp, results, jobs=1 if SMALL else JOBS, progress=False, log=print)
    print(f"{len(exp.points)} points of {exp_path.name} -> {results} in {time.perf_counter() - t0:.0f} s "
          f"({platform.machine()}, {os.cpu_count()} CPUs)")
    return results


def show(df, cols, sort, **fmt):
    """A compact table: the columns that exist, parameter/metric prefixes dropped."""
    cols = [c for c in cols if c in df.columns]
    t = df.sort_values([c for c in sort if c in df.columns])[cols].reset_index(drop=True)
    t.columns = [c.split(".", 1)[1] for c in cols]
    return t.style.format(precision=3, **fmt).hide(axis="index")


def logx(ax):
    """Log x axis with plain tick labels (1, 2, 5 x 10^k)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def log_tokens_axis(axes):
    """The tokens/s panel of a plots.lines figure on a log scale (γ = 0 or a cached static set is ~10-100x faster)."""
    for ax in np.ravel(axes):
        if ax.get_ylabel() == "tokens/s":
            ax.set_yscale("log")


def render(fig):
    """Show a figure once and close it (no second copy from the inline backend at the end of the cell)."""
    display(fig)
    plt.close(fig)


pd.set_option("display.width", 160)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by the model loader'''


def run_cell(full: str, small: str) -> str:
    return f'''if RESULTS is None:
    if not SMALL:
{_indent(full, 8)}
    else:
{_indent(small, 8)}
    results_dir = sweep(EXPERIMENT)
else:
    results_dir = in_root(RESULTS)
df = load_results(results_dir)
print(f"{{len(df)}} points from {{results_dir}}")'''


def _indent(s: str, n: int) -> str:
    return "\n".join((" " * n + line) if line else line for line in s.splitlines())


def write(name: str, cells) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = HERE / f"{name}.ipynb"
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


# ------------------------------------------------------------------------------------- gamma_tradeoff
GAMMA_INTRO = """# DIP-CA: the γ trade-off

DIP-CA (cache-aware DIP) scores every MLP column by |activation| and multiplies the score of a column
that is **not** in the DRAM cache by γ before picking the top `keep` fraction. γ = 1 is plain DIP
(the most accurate masks: no bias toward the cache); γ = 0 takes the cached columns first and reads
flash only when fewer than `keep` columns are cached. This notebook sweeps γ ∈ [0, 1] against the
DRAM budget (fraction of the MLP weights the LRU cache holds) at keep 0.5 on SmolLM2-135M and turns
the flash/DRAM traffic into tokens/s on two phone profiles with dipsim's device model.

Set `RESULTS` to read an existing sweep (e.g. `results/gamma` from
`dipsim sweep experiments/gamma.yaml --out results/gamma`) instead of running one; `SMALL = True`
(or `DIPSIM_NB_SMALL=1`) runs a tiny configuration in seconds."""

GAMMA_FULL = '''EXPERIMENT = {
    "name": "gamma_tradeoff",
    "description": "experiments/gamma.yaml on two phones: DIP-CA gamma x DRAM budget, keep 0.5, LRU",
    "trace": {"model": "smollm2-135m", "tokens": 1024},
    "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "accuracy": True, "accuracy_tokens": 256},
    "grid": {"gamma": [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0],
             "dram_fraction": [0.25, 0.5, 0.75],
             "device": ["phone-12gb-ufs40", "phone-old-ufs31"]},
}'''

GAMMA_SMALL = '''EXPERIMENT = {
    "name": "gamma_tradeoff",
    "description": "tiny: three gammas, half the MLP cached, two phones, 128 tokens",
    "trace": {"model": "smollm2-135m", "tokens": 128},
    "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "dram_fraction": 0.5, "warmup": 8,
             "calib_tokens": 16, "accuracy": True, "accuracy_tokens": 24},
    "grid": {"gamma": [0.0, 0.5, 1.0], "device": ["phone-12gb-ufs40", "phone-old-ufs31"]},
}'''

GAMMA_VS = '''# one device for the curves (the first one, the 12 GB UFS 4.0 phone in the full sweep): one line per DRAM budget
devices = list(dict.fromkeys(df["p.device"])) if "p.device" in df.columns else [None]
DEVICE = devices[0]
one = df if DEVICE is None else df[df["p.device"] == DEVICE]
fig, ax = plots.vs_gamma(one)
log_tokens_axis(ax)
if DEVICE is not None:
    fig.suptitle(f"DIP-CA: the γ trade-off on {DEVICE}")
render(fig)'''

GAMMA_TABLE = '''show(df, ["p.device", "p.dram_fraction", "p.gamma", "m.hit_rate", "m.flash_bytes_per_token", "m.tokens_per_s",
          "m.analytic_tokens_per_s", "m.latency_ms_p99", "m.speedup_vs_dense_stream"],
     sort=["p.device", "p.dram_fraction", "p.gamma"],
     formatter={"flash_bytes_per_token": "{:,.0f}", "tokens_per_s": "{:.1f}", "analytic_tokens_per_s": "{:.1f}",
                "latency_ms_p99": "{:.1f}", "speedup_vs_dense_stream": "{:.1f}", "hit_rate": "{:.3f}"})'''

GAMMA_PARETO_MD = """## Speed against accuracy proxy, on two devices

Without an accuracy measurement γ itself is the proxy: the higher γ, the closer the masks are to plain
DIP's. Each point is one (γ, DRAM budget); the line joins the points that no other point of the same
device beats on both tokens/s and γ (labels: γ / DRAM fraction); the measured accuracy follows below."""

GAMMA_PARETO = '''if "p.device" in df.columns and "m.tokens_per_s" in df.columns:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for dev, sub in df.groupby("p.device", sort=False):
        x, y = sub["m.tokens_per_s"].to_numpy(), sub["p.gamma"].to_numpy()
        pts = ax.scatter(x, y, s=14 + 40 * sub["p.dram_fraction"].to_numpy(), alpha=0.6, label=dev)
        idx = plots.pareto_front(x, y, maximize_x=True, minimize_y=False)
        ax.plot(x[idx], y[idx], lw=1, color=pts.get_facecolor()[0])
        for i in idx:
            ax.annotate(f"{y[i]:g}/{sub['p.dram_fraction'].iloc[i]:g}", (x[i], y[i]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    logx(ax)
    ax.set_xlabel("tokens/s (device model)")
    ax.set_ylabel("γ (higher = closer to plain DIP = more accurate)")
    ax.set_title("Pareto front: tokens/s against γ (marker size: DRAM budget)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    render(fig)
else:
    print("no device in these results: no tokens/s to plot")'''

GAMMA_ACC_MD = """## Accuracy

**Perplexity against tokens/s, on both devices.** The sweep's points carry `accuracy: true`, so every
(γ, DRAM budget) configuration also ran inside the real model (`simulator/accuracy.py`: the same masking
and cache objects in the forward pass, token by token, all configurations batched in one pass, over the
first `accuracy_tokens` tokens). Perplexity does not depend on the device; tokens/s does, so each device
has its own front. A results directory without `m.perplexity` skips this cell."""

GAMMA_ACC = '''if "m.perplexity" in df.columns and df["m.perplexity"].notna().any():
    acc = df[df["m.perplexity"].notna()]
    fig, ax = plots.pareto(acc, x="m.tokens_per_s", y="m.perplexity", by="p.device", annotate="p.gamma")
    logx(ax)
    ax.set_yscale("log")
    render(fig)
    display(show(acc, ["p.device", "p.dram_fraction", "p.gamma", "m.perplexity", "m.kl_to_dense", "m.top1_agreement",
                       "m.tokens_per_s"], sort=["p.device", "p.dram_fraction", "p.gamma"]))
else:
    print("no m.perplexity column: add 'accuracy': True to EXPERIMENT['base'] (sweep points with accuracy: true) to plot perplexity against tokens/s")'''

# ------------------------------------------------------------------------------------- sparsity_tradeoff
SPARSITY_INTRO = """# Sparsity: keep against traffic and speed

How much of the MLP each policy keeps per token (`keep`, the fraction of columns of every matrix, from
0.2 to 1.0) against the flash traffic and tokens/s it causes, for four maskings on SmolLM2-135M with an
LRU cache holding half the MLP weights on the 12 GB UFS 4.0 phone (as `experiments/sparsity.yaml`):

* **dip** — per token, the top-|x| columns of W_up/W_gate and the top-|h| columns of W_down;
* **glu-prune** — only W_down pruned (top-|h|), W_up/W_gate read in full;
* **threshold** — TEAL-like magnitude thresholds calibrated to the keep fraction;
* **static** — a fixed set of hot columns chosen on calibration tokens (no per-token choice).

Set `RESULTS` to read an existing sweep (e.g. `results/sparsity`); `SMALL = True` (or `DIPSIM_NB_SMALL=1`)
runs a tiny configuration in seconds."""

SPARSITY_FULL = '''EXPERIMENT = {
    "name": "sparsity_tradeoff",
    "description": "experiments/sparsity.yaml: keep 0.2..1.0 for dip, glu-prune, threshold, static",
    "trace": {"model": "smollm2-135m", "tokens": 1024},
    "base": {"cache": "lru", "dram_fraction": 0.5, "device": "phone-12gb-ufs40"},
    "grid": {"masking": ["dip", "glu-prune", "threshold", "static"],
             "keep": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]},
}'''

SPARSITY_SMALL = '''EXPERIMENT = {
    "name": "sparsity_tradeoff",
    "description": "tiny: two maskings, two keeps, 128 tokens",
    "trace": {"model": "smollm2-135m", "tokens": 128},
    "base": {"cache": "lru", "dram_fraction": 0.5, "device": "phone-12gb-ufs40", "warmup": 8},
    "grid": {"masking": ["dip", "static"], "keep": [0.3, 0.7]},
}'''

SPARSITY_VS = '''fig, ax = plots.vs_keep(df)
log_tokens_axis(ax)
render(fig)'''

SPARSITY_TABLE = '''show(df, ["p.masking", "p.keep", "m.hit_rate", "m.flash_bytes_per_token", "m.mlp_bytes_per_token", "m.tokens_per_s",
          "m.analytic_tokens_per_s", "m.flash_requests_per_token", "m.mean_request_bytes"],
     sort=["p.masking", "p.keep"],
     formatter={"flash_bytes_per_token": "{:,.0f}", "mlp_bytes_per_token": "{:,.0f}", "tokens_per_s": "{:.1f}",
                "analytic_tokens_per_s": "{:.1f}", "flash_requests_per_token": "{:.0f}",
                "mean_request_bytes": "{:,.0f}", "hit_rate": "{:.3f}"})'''

SPARSITY_PARETO_MD = """## Speed against keep

Keep is the accuracy proxy here (higher keep = closer to the dense model); the line is each policy's
Pareto front of tokens/s against keep. Keep says nothing about *which* columns a policy drops — at the
same keep a static set loses more accuracy than per-token DIP — so compare policies at equal keep only
for speed, and use `accuracy: true` sweeps (perplexity) for the accuracy side."""

SPARSITY_PARETO = '''if "m.tokens_per_s" in df.columns:
    fig, ax = plots.pareto(df, x="m.tokens_per_s", y="p.keep", by="p.masking")
    logx(ax)
    render(fig)
else:
    print("no device in these results: no tokens/s to plot")'''

# ------------------------------------------------------------------------------------- hardware_comparison
HARDWARE_INTRO = """# Hardware: one policy on every device, and the paper's analytic model

DIP-CA (γ 0.2, keep 0.5) beside plain DIP (keep 0.5) and dense streaming, all with an LRU cache holding
half the MLP weights, on every shipped device profile (as `experiments/hardware.yaml`). Bars are dipsim's
device model (flash request sizes and queueing, DRAM, compute, their overlap, per token and layer); the
black marks are the DIP paper's analytic model for the *same* access log (missed bytes / flash bandwidth
vs hit bytes / DRAM bandwidth per layer, no compute, no request-size effects). `paper-a18` is the paper's
own assumption (60 GB/s DRAM, 1 GB/s flash).

Set `RESULTS` to read an existing sweep (e.g. `results/hardware`); `SMALL = True` (or `DIPSIM_NB_SMALL=1`)
runs a tiny configuration in seconds."""

HARDWARE_FULL = '''EXPERIMENT = {
    "name": "hardware_comparison",
    "description": "experiments/hardware.yaml: dense, dip, dip-ca (gamma 0.2) at keep 0.5, half the MLP cached",
    "trace": {"model": "smollm2-135m", "tokens": 1024},
    "base": {"keep": 0.5, "gamma": 0.2, "cache": "lru", "dram_fraction": 0.5},
    "grid": {"device": ["phone-8gb-ufs40", "phone-12gb-ufs40", "phone-old-ufs31", "laptop-ddr5-nvme4",
                        "apple-m2", "paper-a18"],
             "masking": ["dense", "dip", "dip-ca"]},
}'''

HARDWARE_SMALL = '''EXPERIMENT = {
    "name": "hardware_comparison",
    "description": "tiny: dense and dip-ca on two devices, 128 tokens",
    "trace": {"model": "smollm2-135m", "tokens": 128},
    "base": {"keep": 0.5, "gamma": 0.2, "cache": "lru", "dram_fraction": 0.5, "warmup": 8},
    "grid": {"device": ["phone-12gb-ufs40", "paper-a18"], "masking": ["dense", "dip-ca"]},
}'''

HARDWARE_PLOT = '''fig, ax = plots.per_device(df, "m.tokens_per_s", by="p.masking")
ax.set_title("tokens/s per device (bars: device model; black marks: paper's analytic model)")
fig.set_size_inches(min(fig.get_size_inches()[0], 11), 4.4)
fig.tight_layout()
render(fig)'''

HARDWARE_TABLE = '''t = df.assign(**{"m.analytic_over_model": df["m.analytic_tokens_per_s"] / df["m.tokens_per_s"]})
show(t, ["p.device", "p.masking", "m.hit_rate", "m.flash_bytes_per_token", "m.tokens_per_s", "m.analytic_tokens_per_s",
         "m.analytic_over_model", "m.latency_ms_p99", "m.stall_ms_per_token", "m.mean_request_bytes"],
     sort=["p.device", "p.masking"],
     formatter={"flash_bytes_per_token": "{:,.0f}", "tokens_per_s": "{:.1f}", "analytic_tokens_per_s": "{:.1f}",
                "analytic_over_model": "{:.2f}×", "latency_ms_p99": "{:.1f}", "stall_ms_per_token": "{:.1f}",
                "mean_request_bytes": "{:,.0f}", "hit_rate": "{:.3f}"})'''

HARDWARE_RATIO_MD = """## How far the analytic model is from the device model

Tokens/s of DIP-CA per device from both models, side by side (ratio > 1: the analytic model is optimistic)."""

HARDWARE_RATIO = '''pol = "dip-ca" if "dip-ca" in set(df["p.masking"]) else df["p.masking"].iloc[0]
r = df[df["p.masking"] == pol].set_index("p.device")[["m.tokens_per_s", "m.analytic_tokens_per_s"]]
r = r.assign(ratio=r["m.analytic_tokens_per_s"] / r["m.tokens_per_s"])
r.columns = ["device model tok/s", "analytic tok/s", "analytic / device model"]
print(f"masking {pol}")
r.style.format("{:.2f}")'''


PROSE = {}  # what the full-size runs showed (numbers quoted from the runs of 2026-11-28, see the text)
PROSE["gamma_tradeoff"] = """## What this shows

**γ trades mask accuracy for DRAM hits.** Lowering γ makes DIP-CA prefer columns that are already in the
DRAM cache: the hit rate rises, flash bytes per token fall and tokens/s rises, while the masks move away
from plain DIP's (γ = 1) and perplexity rises (cell below). What γ can buy depends on the budget: when the
cache holds less than the kept fraction (budget < keep) even γ = 0 reads the rest from flash and γ changes
little; when it can hold the kept set, a small γ removes most flash reads. The plots come from whichever
sweep this notebook ran or read (the tiny `SMALL` one shows the same directions with fewer points); the
numbers here are from the full-size run (SmolLM2-135M, 1024 tokens of the default corpus, keep 0.5, LRU,
accuracy over the first 256 tokens; 42 points in 248 s with 2 worker processes on the shared 2-vCPU
development machine, the closed-loop accuracy of all 21 configurations in one batched pass included):

* **Half the MLP cached, 12 GB UFS 4.0 phone:** plain DIP hits 55.4 % of the MLP bytes and reads
  11.1 MB/token from flash → 26.2 tokens/s at perplexity 25.8. γ = 0.5: 68.2 %, 38.0 tokens/s, perplexity
  30.9; γ = 0.2: 81.4 %, 56.8 tokens/s, perplexity 92.6; γ = 0 never misses, runs DRAM-bound at 763 tokens/s
  and the model collapses (perplexity 2·10⁵: with keep 0.5 the cache holds exactly the kept set, so the
  masks freeze).
* **A quarter cached:** γ hardly moves speed (16.8 → 18.0 tokens/s from γ = 1 to γ = 0) but still costs
  accuracy (perplexity 25.8 → 58.9).
* **Three quarters cached:** plain DIP already hits 78.7 % (55.6 tokens/s); γ = 0.5 → 89.3 %, 79.6 tokens/s at
  perplexity 30.9; γ = 0.2 → 98.6 %, 158 tokens/s at 131.
* **The older phone** (UFS 3.1, LPDDR4X) has the same hit rates, flash bytes and perplexities (the access
  log does not depend on the device) but less speed: half cached, 18.8 tokens/s for DIP, 31.9 at γ = 0.2.
* **Perplexity against tokens/s** (last plot): each device's front is made of the largest budget's points
  (more DRAM is always faster at equal γ); on SmolLM2 every step down from γ = 1 costs perplexity fast, so
  the front is steep — a 135M-parameter model has little slack in its MLP (the DIP paper's < 0.1
  perplexity loss is for Phi-3-Medium).
* **The paper's analytic model** (`analytic_tokens_per_s`) is about 9× more optimistic whenever flash is
  read (503.6 vs 56.8 tokens/s at γ = 0.2, half cached, 12 GB phone): it charges missed bytes at the flash's
  sequential bandwidth. The two agree only when nothing comes from flash (768 vs 763).
  `hardware_comparison.ipynb` takes that gap apart."""
PROSE["sparsity_tradeoff"] = """## What this shows

**Keep sets how many MLP columns a token reads; the cache serves part of them and flash the rest.** The
per-token policies (dip, threshold) cut flash bytes about in proportion to keep, so tokens/s rises as
keep falls. glu-prune prunes only W_down, so W_up/W_gate stay dense — and, since no mask is needed for
them, they are read ahead while the token runs. static keeps one fixed set: once that set fits in the
cache (keep ≤ DRAM budget) it never touches flash. Keep is not accuracy (use `accuracy: true` sweeps for
that). The plots come from whichever sweep this notebook ran or read; the numbers here are from the
full-size run (SmolLM2-135M, 1024 tokens, LRU holding half the MLP, 12 GB UFS 4.0 phone; 36 points in
70 s with 2 worker processes on the shared 2-vCPU development machine):

* **keep 1.0** is dense for every policy: no mask to wait for, so the whole uncached half of the MLP
  (24.9 MB) is read ahead as 90 requests of 277 KB at full queue depth → 136.9 tokens/s. That is why every
  curve jumps at keep 1.0.
* **dip:** keep 0.9 → 11.1 tokens/s (22.3 MB of flash per token in 1,131 dependent reads of 29 KB), keep 0.5 →
  26.2 tokens/s (11.1 MB, 55.4 % hits), keep 0.2 → 69.4 tokens/s (3.5 MB, 64.4 % hits). **threshold** tracks
  dip within about 5 % (27.8 and 72.6 tokens/s at keep 0.5 and 0.2).
* **glu-prune:** 32.7 tokens/s at keep 0.5 and 79.5 at keep 0.2 — faster than dip at equal keep here,
  because its dense half is prefetched and only W_down's 360-byte columns wait for a mask.
* **static:** 100 % hits for keep ≤ 0.5 (763–943 tokens/s, DRAM-bound); past the budget it reads its
  overflow as a few large prefetched requests (keep 0.6: 130 requests of 62 KB per token, 391 tokens/s).
* **Against the sparse per-token policies, prefetched dense reading wins on this model** until keep drops
  to about 0.2: SmolLM2's Q4_1 columns are 360 B (down) and 1.9 KB (up/gate), each miss costs a whole 4 KiB
  page, and a layer's reads can start only when its mask is known. The paper's analytic model, which knows
  none of this, is 8–15× above the device model for dip and threshold."""
PROSE["hardware_comparison"] = """## What this shows

**The same access log, timed on different hardware, and how far the paper's bytes/bandwidth model is from
dipsim's device model.** Hit rates and flash bytes do not depend on the device (one trace, one cache);
tokens/s does. The plots come from whichever sweep this notebook ran or read (the tiny `SMALL` one has two
devices); the numbers here are from the full-size run (SmolLM2-135M, 1024 tokens, keep 0.5, LRU holding
half the MLP; 18 points in 31 s with 2 worker processes on the shared 2-vCPU development machine):

* **DIP-CA (γ 0.2)** hits 81.4 % of the MLP bytes (4.6 MB/token from flash) on every device and runs at
  56.8 tokens/s on both UFS 4.0 phones (8 and 12 GB are identical: SmolLM2-135M fits in either), 31.9 on the
  old UFS 3.1 phone, 182.5 on the DDR5 + NVMe Gen4 laptop, 84.6 on the M2 and 178.8 on paper-a18 — 1.7–2.3×
  plain DIP (55.4 % hits, 11.1 MB/token).
* **Dense with the same cache is faster still on every real device** (136.9 tokens/s on the UFS 4.0 phones,
  74.8 on the old phone, 273.8 on the laptop, 219.4 on the M2): with no mask to wait for, its 24.9 MB of
  misses are read ahead in 90 requests of 277 KB at full queue depth. Only on paper-a18, where flash is a
  pure bandwidth, does DIP-CA win (178.8 vs 40.2 tokens/s), as in the paper.
* **Analytic / device model for DIP-CA:** 8.9× on the UFS 4.0 phones (503.6 vs 56.8 tokens/s), 8.3× on the
  old phone, 9.5× on the M2, 4.8× on the laptop, 1.01× on paper-a18 (built from the paper's own assumptions,
  where the two models agree by construction); for dense reading they agree within 10 %.
* **Where the gap comes from:** reads cover whole 4 KiB pages, so DIP-CA's 4.6 MB of missed columns cost
  20.3 MB of reads (plain DIP: 11.1 MB → 33.7 MB); and they come as ~1,800 requests of ~11 KB per token in
  60 dependent batches (a layer's mask is known only when its input is), so the phone's UFS 4.0 spends
  16.6 ms per token on them — about 1.2 GB/s of its 4.2 GB/s.

The analytic model is therefore a ceiling for large, queue-filling reads, not a prediction for per-column
sparse reads of a small model on a phone."""


def trade_off(name: str, intro: str, full: str, small: str, body: list, after: list = ()) -> Path:
    """A notebook of the common shape: intro, parameters, set-up, the sweep (full or small), the
    notebook's own cells, the paragraph saying what the plots show, then any closing cells."""
    return write(name, [
        new_markdown_cell(intro),
        params_cell(name),
        new_code_cell(SETUP),
        new_code_cell(run_cell(full, small)),
        *body,
        new_markdown_cell(PROSE[name]),
        *after,
    ])


def build() -> list[Path]:
    md, code = new_markdown_cell, new_code_cell
    return [
        trade_off("gamma_tradeoff", GAMMA_INTRO, GAMMA_FULL, GAMMA_SMALL,
                  [code(GAMMA_TABLE), code(GAMMA_VS), md(GAMMA_PARETO_MD), code(GAMMA_PARETO)],
                  [md(GAMMA_ACC_MD), code(GAMMA_ACC)]),
        trade_off("sparsity_tradeoff", SPARSITY_INTRO, SPARSITY_FULL, SPARSITY_SMALL,
                  [code(SPARSITY_TABLE), code(SPARSITY_VS), md(SPARSITY_PARETO_MD), code(SPARSITY_PARETO)]),
        trade_off("hardware_comparison", HARDWARE_INTRO, HARDWARE_FULL, HARDWARE_SMALL,
                  [code(HARDWARE_PLOT), code(HARDWARE_TABLE), md(HARDWARE_RATIO_MD), code(HARDWARE_RATIO)]),
    ]


def execute(paths: list[Path]) -> None:
    """Run each notebook in place from the repository root with this Python (a kernel spec made for it)."""
    import json
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as tmp:
        kdir = Path(tmp) / "dipsim-venv"
        kdir.mkdir()
        (kdir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "dipsim venv", "language": "python"}))
        for p in paths:
            nb = nbformat.read(p, as_version=4)
            km = AsyncKernelManager(kernel_name="dipsim-venv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[tmp]))
            NotebookClient(nb, km=km, timeout=3600, resources={"metadata": {"path": str(HERE.parent)}}).execute()
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
            nbformat.write(nb, p)
            print(f"executed {p} ({p.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    written = build()
    for p in written:
        print(f"wrote {p}")
    if "--execute" in sys.argv[1:]:
        only = [a for a in sys.argv[1:] if not a.startswith("--")]
        execute([p for p in written if not only or p.stem in only])
