#!/usr/bin/env python3
"""Write the plotting notebooks of notebooks/ (without outputs).

    .venv/bin/python notebooks/_make.py            # (re)write the three .ipynb files, outputs cleared
    .venv/bin/python notebooks/_make.py --execute  # ... then run them in place, full size (about 15 minutes)
    .venv/bin/python notebooks/_make.py --execute gamma_tradeoff   # rewrite and run only the named ones
    DIPSIM_NB_SMALL=1 .venv/bin/python notebooks/_make.py --execute   # ... the tiny configuration

Naming notebooks rewrites only those, so they can be run one after another without clearing the
outputs of the others. The full-size sweeps run with DIPSIM_NB_JOBS (default 2) worker processes.

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
import warnings
from pathlib import Path

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


def shown(p: Path):
    """A path as printed: relative to the checkout when inside it."""
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


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
    print(f"{len(exp.points)} points of {exp_path.name} -> {shown(results)} in {time.perf_counter() - t0:.0f} s "
          f"({platform.machine()}, {os.cpu_count()} CPUs)")
    return results


#: table columns: header with its unit, scale (values are divided by it), format
COLUMNS = {
    "p.device": ("device", 1, "{}"),
    "p.masking": ("masking", 1, "{}"),
    "p.keep": ("keep", 1, "{:g}"),
    "p.gamma": ("γ", 1, "{:g}"),
    "p.dram_fraction": ("DRAM cache (share of MLP)", 1, "{:g}"),
    "m.hit_rate": ("hit rate", 1, "{:.3f}"),
    "m.closed_loop_hit_rate": ("hit rate, closed loop", 1, "{:.3f}"),
    "m.flash_bytes_per_token": ("flash, MB/token (weights)", 1e6, "{:.2f}"),
    "m.flash_read_bytes_per_token": ("flash, MB/token (pages read)", 1e6, "{:.2f}"),
    "m.flash_ms_per_token": ("flash busy, ms/token", 1, "{:.1f}"),
    "m.flash_requests_per_token": ("flash requests/token", 1, "{:,.0f}"),
    "m.mean_request_bytes": ("mean request, KB", 1e3, "{:.1f}"),
    "m.stall_ms_per_token": ("stall, ms/token", 1, "{:.1f}"),
    "m.latency_ms_p99": ("p99 latency, ms/token", 1, "{:.1f}"),
    "m.tokens_per_s": ("tokens/s", 1, "{:.1f}"),
    "m.analytic_tokens_per_s": ("tokens/s, paper's model", 1, "{:.1f}"),
    "m.analytic_over_model": ("paper's model / device model", 1, "{:.2f}×"),
    "m.dense_tokens_per_s": ("tokens/s of dense, same DRAM", 1, "{:.1f}"),
    "m.speedup_vs_dense": ("speed-up over dense, same DRAM", 1, "{:.2f}×"),
    "m.perplexity": ("perplexity", 1, lambda v: f"{v:.2f}" if v < 100 else f"{v:,.0f}"),
    "m.kl_to_dense": ("KL to dense, nats", 1, "{:.3f}"),
    "m.top1_agreement": ("top-1 agreement", 1, "{:.3f}"),
}


def header(c: str) -> str:
    """A column's table header; ``metric@value`` (from ``spread``) is the metric for one value, e.g. a device."""
    base, _, of = c.partition("@")
    h = COLUMNS.get(base, (base.split(".", 1)[-1].replace("_", " "),))[0]
    return f"{h}, {of}" if of else h


def spread(df, index: list, metric: str, by: str) -> pd.DataFrame:
    """``metric`` with one column per value of ``by`` (``metric@value``), one row per ``index``."""
    w = df.pivot_table(index=index, columns=by, values=metric, sort=False)
    w.columns = [f"{metric}@{v}" for v in w.columns]
    return w


def cell(c: str, v) -> str:
    """One value of column ``c`` as the tables show it."""
    _, scale, f = COLUMNS.get(c.partition("@")[0], ("", 1, "{}"))
    return "–" if pd.isna(v) else f(v / scale) if callable(f) else f.format(v / scale)


def table(df, cols, sort=()):
    """The columns ``cols`` that exist, with units in the headers, sorted by ``sort``."""
    cols = [c for c in cols if c in df.columns]
    t = df.sort_values([c for c in sort if c in df.columns])[cols].reset_index(drop=True)
    fmt = {}
    for c in cols:
        _, scale, f = COLUMNS.get(c.partition("@")[0], ("", 1, "{}"))
        if scale != 1:
            t[c] = t[c] / scale
        fmt[header(c)] = f
    t.columns = [header(c) for c in cols]
    return t.style.format(fmt, na_rep="–").hide(axis="index")


def plain_log(axis):
    """A log axis labelled with plain numbers: at 1, 2, 5 x 10^k over a few decades, at 10^k over more."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    few = hi / max(lo, 1e-300) < 1e3
    if not few:   # ticks at 10^k only: start the axis at one, so that the lowest values have a tick below them
        (axis.axes.set_ylim if axis is axis.axes.yaxis else axis.axes.set_xlim)(10 ** np.floor(np.log10(lo)), hi)
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if few else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v < 1e4 else f"{v:.0e}".replace("e+0", "e")))
    axis.set_minor_formatter(NullFormatter())


def render(fig):
    """Show a figure once and close it (no second copy from the inline backend at the end of the cell).
    Log axes get plain tick labels (20, 50, 100 rather than 2x10^1); a log axis whose lines reach zero,
    which it cannot show, goes back to linear."""
    for ax in fig.axes:
        if ax.get_yscale() == "log" and any((np.asarray(l.get_ydata(), float) <= 0).any() for l in ax.get_lines()):
            ax.set_yscale("linear")
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                plain_log(axis)
    display(fig)
    plt.close(fig)


NO_ACCURACY = "no m.perplexity column: these results were swept without accuracy: true"
pd.set_option("display.width", 160)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by the model loader'''

TRADEOFF = '''# The accuracy-against-speed figure: plots.accuracy_vs_speed labels a point by its policy alone; here points
# also differ in a second parameter (the DRAM budget, the policy), so they are coloured by it and labelled by
# the swept value, with the same conventions: every point labelled, the Pareto front over the points that have
# not collapsed, collapsed points on a dashed line at 10x the dense perplexity with their value.
from matplotlib.transforms import Bbox

from simulator.plots.base import spans_decades


def place_labels(ax, items, fontsize=7):
    """Write each ``(x, y, text, colour)`` beside its point so that no label covers another label or a
    point: a label tries the spots around its point, nearest first, then further out with a leader line."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pts = [ax.transData.transform((x, y)) for x, y, *_ in items]
    taken = [Bbox.from_bounds(px - 6, py - 6, 12, 12) for px, py in pts]
    for (x, y, text, colour), (px, py) in sorted(zip(items, pts), key=lambda t: (-t[1][1], t[1][0])):
        probe = ax.annotate(text, (x, y), fontsize=fontsize, textcoords="offset points", xytext=(0, 0),
                            ha="left", va="bottom")
        bb = probe.get_window_extent(renderer)
        probe.remove()
        w, h = bb.width, bb.height
        spots = [(r, dx, dy) for r in (1, 2, 3.5, 5, 7, 9, 12, 15) for dx, dy in (
            (7 * r, -h / 2), (7 * r, 3 * r), (7 * r, -h - 3 * r), (-w - 7 * r, -h / 2), (-w - 7 * r, 3 * r),
            (-w - 7 * r, -h - 3 * r), (-w / 2, 7 * r), (-w / 2, -h - 7 * r))]
        fits = [s for s in spots if frame.contains(px + s[1], py + s[2]) and frame.contains(px + s[1] + w, py + s[2] + h)]
        free = [s for s in fits if not any(Bbox.from_bounds(px + s[1], py + s[2], w, h).overlaps(b) for b in taken)]
        r, dx, dy = (free or fits or spots)[0]
        taken.append(Bbox.from_bounds(px + dx, py + dy, w, h))
        k = 72 / fig.dpi  # pixels -> points
        ax.annotate(text, (x, y), fontsize=fontsize, color=colour, textcoords="offset points", xytext=(dx * k, dy * k),
                    ha="left", va="bottom", zorder=5,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color=colour, shrinkA=0, shrinkB=3) if r > 1 else None)


def compact(v: float) -> str:
    """A collapsed perplexity in a few characters: 1,120 or 6.4e5."""
    return f"{v:,.0f}" if v < 1e5 else f"{v:.2g}".replace("e+0", "e").replace("e+", "e")


def merged(points, name, kinds):
    """One label for coincident points: their texts, and the values of the colour column when they differ."""
    texts = ", ".join(dict.fromkeys(t for t, _ in points))
    values = list(dict.fromkeys(v for _, v in points))
    if len(values) == 1:
        return texts, f"C{kinds.index(values[0])}"
    return f"{texts} ({name} {', '.join(map(str, values))})", "k"


def tradeoff(d, *, colour: str, text, panel: str | None = None, title: str = "", collapse: float = 10.0):
    """Perplexity against tokens/s (device model): one panel per value of ``panel``, points coloured by
    ``colour`` and labelled ``text(row)``; a panel whose rows share one dense baseline also reads as the
    speed-up over it (top axis). Returns the figure, its axes and the rows on each Pareto front."""
    d = d.dropna(subset=["m.tokens_per_s", "m.perplexity"])
    groups = [(None, d)] if panel is None else list(d.groupby(panel, sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(max(8.0, 5.6 * len(groups) + 0.8), 5.2), sharey=True,
                             squeeze=False)
    axes = axes[0]
    ref = float(d["m.dense_perplexity"].iloc[0])
    limit = collapse * ref
    kinds = sorted(set(d[colour]))   # in the order (and colours) of plots.lines
    name = plots.label(colour).split(" (")[0]
    collapsed = (d["m.perplexity"] > limit).any()
    labels, fronts = [], []
    for ax, (key, sub) in zip(axes, groups):
        x, y = sub["m.tokens_per_s"].to_numpy(float), sub["m.perplexity"].to_numpy(float)
        ok = y <= limit
        shown = np.where(ok, y, limit)
        for i, v in enumerate(kinds):
            m = (sub[colour] == v).to_numpy()
            ax.scatter(x[m & ok], y[m & ok], s=30, color=f"C{i}", zorder=3, label=f"{name} = {v}")
            ax.scatter(x[m & ~ok], shown[m & ~ok], marker="^", s=55, color=f"C{i}", zorder=3)
        front = np.flatnonzero(ok)[plots.pareto_front(x[ok], y[ok])] if ok.any() else np.array([], int)
        ax.plot(x[front], y[front], color="k", lw=1, zorder=2, label="Pareto front")
        ax.scatter(x[front], y[front], s=90, facecolors="none", edgecolors="k", lw=0.8, zorder=4)
        rows = sub.iloc[front].astype({colour: object})
        for j, i in enumerate(front):    # a front point that several rows share names them all
            same = sub[(x == x[i]) & (shown == shown[i])]
            if len(same) > 1:
                rows.iloc[j, rows.columns.get_loc(colour)] = ", ".join(map(str, dict.fromkeys(same[colour])))
        fronts.append(rows)
        ax.axhline(ref, ls=":", color="grey", lw=1, label=f"dense model ({ref:.3g})")
        if collapsed:
            ax.axhline(limit, ls="--", color="C3", lw=0.8,
                       label=f"collapsed (> {collapse:g}x dense): ▲ on this line")
        if collapsed or spans_decades(np.r_[shown, ref]):
            ax.set_yscale("log")
        if spans_decades(x):
            ax.set_xscale("log")
        ax.set_xlabel(plots.label("m.tokens_per_s"))
        ax.grid(alpha=0.3, which="both")
        plots.speedup_axis(ax, sub)    # a top axis of speed-ups over dense, where the panel has one baseline
        if key is not None:
            ax.set_title(str(key), fontsize=9)
        pts = {}
        for i, row in enumerate(sub.to_dict("records")):   # coincident points share one label
            t = text(row) if ok[i] else f"{text(row)}: {compact(y[i])}"
            pts.setdefault((x[i], shown[i]), []).append((t, row[colour]))
        labels.append([(px, py, merged(v, name, kinds)) for (px, py), v in pts.items()])
    axes[0].set_ylabel(plots.label("m.perplexity") + " (lower is better)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plots.base.shared_legend(fig, axes)
    for ax in axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                plain_log(axis)
    fig.canvas.draw()
    for ax, items in zip(axes, labels):
        place_labels(ax, [(px, py, t, c) for px, py, (t, c) in items])
    return fig, axes, pd.concat(fronts)'''




def experiment(name: str, tokens: int, description: str, rest: str) -> str:
    """A notebook's ``EXPERIMENT``: named after the notebook, on the SmolLM2 trace of ``tokens`` tokens,
    then ``rest`` (its base and grid entries)."""
    return (f'EXPERIMENT = {{\n    "name": "{name}",\n    "description": "{description}",\n'
            f'    "trace": {{"model": "smollm2-135m", "tokens": {tokens}}},\n{rest}\n}}')


def run_cell(name: str, full: tuple[str, str], small: tuple[str, str]) -> str:
    """The sweep cell: the full-size experiment (1024 tokens) or the small one (128), each given as
    ``(description, base and grid entries)``, unless RESULTS names a sweep to read."""
    return f'''if RESULTS is None:
    if not SMALL:
{_indent(experiment(name, 1024, *full), 8)}
    else:
{_indent(experiment(name, 128, *small), 8)}
    results_dir = sweep(EXPERIMENT)
else:
    results_dir = in_root(RESULTS)
df = load_results(results_dir)
print(f"{{len(df)}} points from {{shown(results_dir)}}")'''


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


def results_note(small: str) -> str:
    """The last paragraph of an intro: the notebook's parameters RESULTS and SMALL (``small`` says what
    the tiny configuration runs)."""
    return ("Set `RESULTS` to read an existing sweep instead of running one; `SMALL = True` (or `DIPSIM_NB_SMALL=1`)\n"
            f"runs a tiny configuration (128 tokens, {small}) in seconds.")


def accuracy_cell(frame: str, x: str, colour: str, what: str, skip: tuple[str, ...] = ()) -> str:
    """The cell plotting perplexity, KL to dense and top-1 agreement of the rows ``frame`` against
    ``x``, one line per ``colour``; the title names ``what`` and the context but ``x`` and ``skip``."""
    return f'''if "m.perplexity" in df.columns:
    fig, ax = plots.lines({frame}, "{x}", ["m.perplexity", "m.kl_to_dense", "m.top1_agreement"], "{colour}",
                          title=f"Accuracy against {what} -- {{plots.context({frame}, skip={(x, *skip)!r})}}")
    ax[2].set_yscale("linear")   # a share of positions: 0 to 1
    render(fig)
else:
    print(NO_ACCURACY)'''


# ------------------------------------------------------------------------------------- gamma_tradeoff
GAMMA_INTRO = """# DIP-CA: the γ trade-off

DIP-CA (cache-aware DIP) scores every MLP column by |activation| and multiplies the score of a column that
is **not** in the DRAM cache by γ before taking the top `keep` fraction. γ = 1 is plain DIP; γ = 0 takes
the cached columns first and reads flash only when fewer than `keep` of them are cached. Lowering γ buys
DRAM hits -- less flash traffic, more tokens/s -- with masks further from DIP's.

This notebook sweeps γ against the DRAM budget (the share of the MLP weights the LRU cache holds) at
keep 0.5 on SmolLM2-135M, 1024 tokens of the default corpus (`experiments/gamma.yaml`, on two phones).
Speed comes from dipsim's device model: flash requests and their queueing, DRAM, compute, per token and
layer. Accuracy is measured, not inferred from γ: every configuration also runs inside the real model
with the same masking and cache objects in its forward pass (`accuracy: true`), which gives perplexity,
KL to the dense model and top-1 agreement. The closed loop runs layer by layer, one parallel forward per
configuration (seconds per configuration, not a second per token), and the results are kept in the
accuracy store, so a rerun measures nothing twice. The access log and the accuracy do not depend on the device; tokens/s does.

""" + results_note("a few points")

GAMMA_FULL = ("experiments/gamma.yaml on two phones: DIP-CA gamma x DRAM budget, keep 0.5, LRU, accuracy in the loop",
              '''\
    "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "accuracy": True},
    "grid": {"gamma": [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0],
             "dram_fraction": [0.25, 0.5, 0.75],
             "device": ["phone-12gb-ufs40", "phone-old-ufs31"]},''')

GAMMA_SMALL = ("tiny: three gammas, two budgets, two phones, 128 tokens (accuracy over 32)", '''\
    "base": {"masking": "dip-ca", "keep": 0.5, "cache": "lru", "warmup": 8, "calib_tokens": 16,
             "accuracy": True, "accuracy_tokens": 32},
    "grid": {"gamma": [0.0, 0.5, 1.0], "dram_fraction": [0.25, 0.5], "device": ["phone-12gb-ufs40", "phone-old-ufs31"]},''')

GAMMA_TABLE_MD = """## The sweep

One row per configuration (DRAM budget, γ): the hit rate and flash traffic (the missed weights' bytes) of
replaying the trace, the hit rate of the closed loop (the masked model's own activations), the accuracy,
and on each phone tokens/s and the speed-up over the dense model with the same DRAM budget
(`speedup_vs_dense`: the dense model on that phone with the same LRU cache of the same share of the MLP;
dipsim runs it once per phone and budget). For the first phone also the pages its flash reads for those
weights (whole pages, merged requests) and the tokens/s of the DIP paper's bytes/bandwidth model on the
same access log."""

GAMMA_TABLE = '''if "m.dense_perplexity" in df.columns:
    print(f"dense model over the same tokens: perplexity {df['m.dense_perplexity'].iloc[0]:.2f}")
DEVICES = list(dict.fromkeys(df["p.device"]))
dense = df.pivot_table(index="p.device", columns="p.dram_fraction", values="m.dense_tokens_per_s", sort=False)
for dev, row in dense.iterrows():   # the baselines of speedup_vs_dense: one dense run per phone and budget
    print(f"the dense model with the same cache on {dev}: "
          + ", ".join(f"{v:.1f} tokens/s at {f:g} of the MLP" for f, v in row.items()))
one = df[df["p.device"] == DEVICES[0]]   # the device-independent columns, once
idx = ["p.dram_fraction", "p.gamma"]
t = one.set_index(idx).join(spread(df, idx, "m.tokens_per_s", "p.device"))
t = t.join(spread(df, idx, "m.speedup_vs_dense", "p.device"))
t[f"m.analytic_tokens_per_s@{DEVICES[0]}"] = t["m.analytic_tokens_per_s"]
t[f"m.flash_read_bytes_per_token@{DEVICES[0]}"] = t["m.flash_read_bytes_per_token"]
table(t.reset_index(), [*idx, "m.hit_rate", "m.closed_loop_hit_rate", "m.flash_bytes_per_token",
                        f"m.flash_read_bytes_per_token@{DEVICES[0]}", "m.perplexity",
                        "m.kl_to_dense", "m.top1_agreement", *[f"m.tokens_per_s@{d}" for d in DEVICES],
                        *[f"m.speedup_vs_dense@{d}" for d in DEVICES], f"m.analytic_tokens_per_s@{DEVICES[0]}"],
      sort=idx)'''

GAMMA_VS_MD = """## γ against hit rate, flash traffic and speed

On the first phone (the 12 GB UFS 4.0 one in the full sweep), one line per DRAM budget. The last panel is
the speed-up over the dense model with the same budget (each line against its own budget's dense run; the
dotted line at 1x is that dense model)."""

GAMMA_VS = '''fig, ax = plots.vs_gamma(one)
render(fig)'''

GAMMA_ACC_MD = """## γ against accuracy

Measured with the policy and its cache in the loop; the same on every device."""

GAMMA_ACC = accuracy_cell("one", "p.gamma", "p.dram_fraction", "γ", skip=("p.device",))

GAMMA_TRADE_MD = """## Perplexity against tokens/s, on both phones

Every configuration is a point, coloured by its DRAM budget and labelled with its γ. The black line is
the Pareto front: the configurations that no other one beats on both speed and perplexity. A
configuration whose perplexity exceeds 10x the dense model's has collapsed: it sits on the dashed line,
labelled with its perplexity, instead of stretching the axis. The table lists each phone's front."""

GAMMA_TRADE = '''if "m.perplexity" in df.columns:
    fig, axes, front = tradeoff(df, colour="p.dram_fraction", text=lambda r: f"γ{r['p.gamma']:g}", panel="p.device",
                                title=f"Perplexity against tokens/s -- {plots.context(df, skip=('p.device',))}")
    render(fig)
    display(table(front, ["p.device", "p.dram_fraction", "p.gamma", "m.tokens_per_s", "m.speedup_vs_dense",
                          "m.perplexity", "m.kl_to_dense"]))
else:
    print(NO_ACCURACY)'''

# ------------------------------------------------------------------------------------- sparsity_tradeoff
SPARSITY_INTRO = """# Sparsity: keep against traffic, speed and accuracy

How much of the MLP each policy keeps per token (`keep`, the fraction of the columns of every matrix,
0.2 to 1.0) against the flash traffic, the tokens/s and the accuracy it gives, for four maskings on
SmolLM2-135M (1024 tokens of the default corpus) with an LRU cache holding half the MLP weights on the
12 GB UFS 4.0 phone (`experiments/sparsity.yaml`):

* **dip** -- per token, the top-|x| columns of W_up/W_gate and the top-|h| columns of W_down;
* **glu-prune** -- only W_down pruned (top-|h|), W_up/W_gate read in full;
* **threshold** -- TEAL-like magnitude thresholds calibrated to the keep fraction;
* **static** -- one fixed set of hot columns chosen on calibration tokens (no per-token choice).

Keep says how many columns a policy reads, not which: two policies at the same keep can differ widely in
accuracy. So every configuration also runs inside the real model with the same masking and cache objects
in its forward pass (`accuracy: true`): perplexity, KL to the dense model, top-1 agreement. The closed loop
runs layer by layer, one parallel forward per configuration (seconds per configuration); the accuracy
store keeps the results for reruns.

""" + results_note("a few points")

SPARSITY_FULL = ("experiments/sparsity.yaml: keep 0.2..1.0 for dip, glu-prune, threshold, static, accuracy in the loop",
                 '''\
    "base": {"cache": "lru", "dram_fraction": 0.5, "device": "phone-12gb-ufs40", "accuracy": True},
    "grid": {"masking": ["dip", "glu-prune", "threshold", "static"],
             "keep": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]},''')

SPARSITY_SMALL = ("tiny: two maskings, three keeps, 128 tokens (accuracy over 32)", '''\
    "base": {"cache": "lru", "dram_fraction": 0.5, "device": "phone-12gb-ufs40", "warmup": 8, "calib_tokens": 16,
             "accuracy": True, "accuracy_tokens": 32},
    "grid": {"masking": ["dip", "static"], "keep": [0.3, 0.7, 1.0]},''')

SPARSITY_TABLE = '''if "m.dense_perplexity" in df.columns:
    print(f"dense model over the same tokens: perplexity {df['m.dense_perplexity'].iloc[0]:.2f}")
table(df, ["p.masking", "p.keep", "m.hit_rate", "m.flash_bytes_per_token", "m.flash_requests_per_token",
           "m.mean_request_bytes", "m.tokens_per_s", "m.speedup_vs_dense", "m.analytic_tokens_per_s", "m.perplexity",
           "m.kl_to_dense", "m.top1_agreement"], sort=["p.masking", "p.keep"])'''

SPARSITY_VS_MD = """## Keep against hit rate, flash traffic and speed

The last panel is the speed-up over the dense model with the same DRAM (the same LRU cache of half the
MLP on the same phone; the dotted line at 1x)."""

SPARSITY_VS = '''fig, ax = plots.vs_keep(df)
render(fig)'''

SPARSITY_ACC_MD = """## Keep against accuracy

Measured with each policy and its cache in the loop."""

SPARSITY_ACC = accuracy_cell("df", "p.keep", "p.masking", "keep")

SPARSITY_TRADE_MD = """## Perplexity against tokens/s

Every configuration is a point, coloured by its policy and labelled with its keep; the black line is the
Pareto front over all policies, and a configuration above 10x the dense perplexity (collapsed) sits on the
dashed line, labelled with its perplexity. The top axis reads tokens/s as the speed-up over the dense model
with the same DRAM. The table lists the front."""

SPARSITY_TRADE = '''if "m.perplexity" in df.columns:
    fig, axes, front = tradeoff(df, colour="p.masking", text=lambda r: f"{r['p.keep']:g}",
                                title=f"Perplexity against tokens/s (labels: keep) -- {plots.context(df)}")
    render(fig)
    display(table(front, ["p.masking", "p.keep", "m.tokens_per_s", "m.speedup_vs_dense", "m.perplexity",
                          "m.kl_to_dense"]))
else:
    print(NO_ACCURACY)'''

# ------------------------------------------------------------------------------------- hardware_comparison
HARDWARE_INTRO = """# Hardware: one access log on every device, and the paper's analytic model

Dense, plain DIP (keep 0.5) and DIP-CA (γ 0.2, keep 0.5), all with an LRU cache holding half the MLP
weights of SmolLM2-135M (1024 tokens of the default corpus), timed on every shipped device profile
(`experiments/hardware.yaml`). Bars are dipsim's device model (flash request sizes and queueing, DRAM,
compute, their overlap, per token and layer); the black marks are the DIP paper's bytes/bandwidth model
on the *same* access log (missed bytes / flash bandwidth + hit bytes / DRAM bandwidth per layer, no
compute, no request-size effects). `paper-a18` is the paper's own assumption (60 GB/s DRAM, 1 GB/s flash,
bandwidths only).

The access log and the accuracy do not depend on the device: each configuration runs once inside the real
model (`accuracy: true`; perplexity, KL to the dense model, top-1 agreement), and its figures appear once,
in one column per configuration.

""" + results_note("two devices")

HARDWARE_FULL = ("experiments/hardware.yaml: dense, dip, dip-ca (gamma 0.2) at keep 0.5, half the MLP cached", '''\
    "base": {"keep": 0.5, "gamma": 0.2, "cache": "lru", "dram_fraction": 0.5, "accuracy": True},
    "grid": {"device": ["phone-8gb-ufs40", "phone-12gb-ufs40", "phone-old-ufs31", "laptop-ddr5-nvme4",
                        "apple-m2", "paper-a18"],
             "masking": ["dense", "dip", "dip-ca"]},''')

HARDWARE_SMALL = ("tiny: the three configurations on two devices, 128 tokens (accuracy over 32)", '''\
    "base": {"keep": 0.5, "gamma": 0.2, "cache": "lru", "dram_fraction": 0.5, "warmup": 8, "accuracy": True,
             "accuracy_tokens": 32},
    "grid": {"device": ["phone-12gb-ufs40", "paper-a18"], "masking": ["dense", "dip", "dip-ca"]},''')

HARDWARE_PLOT = '''fig, ax = plots.per_device(df, "m.tokens_per_s", by="p.masking")
gamma = df.loc[df["p.masking"] == "dip-ca", "p.gamma"].dropna().unique()
ax.set_title(f"tokens/s by device -- {plots.context(df, skip=('p.device', 'p.gamma'))}"
             + (f"; dip-ca at γ {gamma[0]:g}" if len(gamma) == 1 else ""), fontsize=10)
render(fig)    # per_device puts the legend below the bars, clear of the paper-model marks'''

HARDWARE_SPEEDUP_MD = """## Speed-up over the dense model, per device

Each configuration's tokens/s over the dense model's on the same device with the same DRAM (the same LRU
cache of half the MLP): `speedup_vs_dense`. Above the dotted line at 1x, a configuration beats dense."""

HARDWARE_SPEEDUP = '''sparse = df[df["p.masking"] != "dense"]
fig, ax = plots.per_device(sparse, "m.speedup_vs_dense", by="p.masking")
gamma = sparse.loc[sparse["p.masking"] == "dip-ca", "p.gamma"].dropna().unique()
what = plots.context(sparse, skip=("p.device", "p.masking", "p.gamma")) + (f"; dip-ca at γ {gamma[0]:g}" if len(gamma) == 1 else "")
ax.set_title(f"speed-up over the dense model with the same DRAM -- {what}{plots.base.dense_note(sparse)}", fontsize=10)
render(fig)'''

HARDWARE_SPEED_MD = """## Tokens/s per device

One column per configuration: the device model, its speed-up over the dense model with the same DRAM, the
paper's model, and the paper's model over the device model (> 1: the paper's model is optimistic)."""

HARDWARE_SPEED = '''r = df.assign(**{"m.analytic_over_model": df["m.analytic_tokens_per_s"] / df["m.tokens_per_s"]})
parts = {m: r.pivot_table(index="p.device", columns="p.masking", values=m, sort=False)
         for m in ("m.tokens_per_s", "m.speedup_vs_dense", "m.analytic_tokens_per_s", "m.analytic_over_model")}
w = pd.concat({header(m): v for m, v in parts.items()}, axis=1).rename_axis(index="device", columns=[None, None])
w.style.format({(header(m), c): COLUMNS[m][2] for m, v in parts.items() for c in v.columns})'''

HARDWARE_ACC_MD = """## Accuracy and traffic per configuration

The same on every device (one trace, one cache, one model): one column per configuration. The flash
traffic here is the weights' own bytes; what each device reads for them (whole pages, merged requests)
and how long its flash is busy follow below."""

HARDWARE_ACC = '''one = df[df["p.device"] == df["p.device"].iloc[0]].set_index("p.masking")
rows = [c for c in ("m.perplexity", "m.kl_to_dense", "m.top1_agreement", "m.hit_rate", "m.closed_loop_hit_rate",
                    "m.flash_bytes_per_token") if c in one.columns]
pd.DataFrame({m: [cell(c, one.at[m, c]) for c in rows] for m in one.index},
             index=[header(c) for c in rows])'''

HARDWARE_TABLE_MD = """## What each device does with the misses"""

HARDWARE_TABLE = '''table(df, ["p.device", "p.masking", "m.flash_read_bytes_per_token", "m.flash_requests_per_token",
           "m.mean_request_bytes", "m.flash_ms_per_token", "m.stall_ms_per_token", "m.latency_ms_p99", "m.tokens_per_s",
           "m.speedup_vs_dense"])'''


# What the full-size runs show. Every number below appears in the executed notebook's own outputs
# (tables and printed lines); ratios in the text are of two such numbers.
PROSE = {}
PROSE["gamma_tradeoff"] = """## What this shows

The numbers are from the full-size sweep above; the `SMALL` run shows the same shapes on 128 tokens. On
these 1024 tokens the dense model's perplexity is 12.74, and plain DIP at keep 0.5 (γ = 1) gives 17.60 at
every budget.

* **γ buys speed only when the cache can hold most of what a token keeps.** With a quarter of the MLP
  cached, every γ runs at 16.8-18.3 tokens/s on the 12 GB phone: the weights read from flash fall from
  18.02 to 12.44 MB/token, but the pages the flash reads for them only from 39.79 to 30.20 MB -- while
  perplexity rises to 38.34 at γ = 0. With half cached, γ = 0.5 takes DIP from 26.2 to 38.0 tokens/s at
  perplexity 20.92; with three quarters, from 55.6 to 79.6 tokens/s at 22.36.
* **Below γ = 0.3 accuracy goes fast, and γ ≤ 0.1 collapses the model** once the cache can hold the
  kept set. Half cached: γ = 0.3 gives 48.5 tokens/s at perplexity 33.24, γ = 0.2 56.8 at 74.61, γ = 0.1
  71.6 at 297. γ = 0 then takes only cached columns, so it never reads flash (hit rate 1.000, 762.9
  tokens/s) and the cache never changes again: the model is held to the columns cached in its first
  tokens, perplexity 480,147.
* **Against the dense model with the same cache, no γ that keeps the model usable is faster**
  (`speedup_vs_dense`). The dense model needs no mask, so it reads its uncached share ahead in long
  requests: 99.6, 136.9 and 259.1 tokens/s on the 12 GB phone with a quarter, half and three quarters
  cached. DIP runs at 0.17x, 0.19x and 0.21x of that, γ = 0.2 at 0.18x, 0.41x and 0.61x (0.65x on the
  old phone). Only γ ≤ 0.1 passes 1x -- 1.20x at γ = 0.1 with three quarters cached, perplexity 653;
  2.94x and 5.57x at γ = 0 -- where the model has collapsed.
* **The Pareto front (points within 10x the dense perplexity) is the largest budget's γ = 1, 0.7, 0.5,
  0.3 on both phones**: at every perplexity the fastest configuration caches three quarters of the MLP.
  The budget is the cheap lever: at γ = 1, going from half to three quarters cached takes the 12 GB
  phone from 26.2 to 55.6 tokens/s at no cost in accuracy; γ then trades on from there (γ = 0.7: 66.0
  tokens/s at perplexity 18.82). The dense model gains as much from the same DRAM, though: DIP's
  speed-up over it moves only from 0.19x to 0.21x, and the front's fastest point, γ = 0.3 at three
  quarters (113.9 tokens/s, perplexity 45.22), is 0.44x dense.
* **The older phone** (UFS 3.1, LPDDR4X) has the same hit rates, traffic and accuracy -- the access log
  and the model do not depend on the device -- and less speed: with three quarters cached 30.7 tokens/s
  for DIP, 41.6 at γ = 0.5, 94.1 at γ = 0.2 (its dense model: 145.3).
* **The closed loop hits a little more than the replay of the dense trace** (half cached: 0.827 against
  0.813 at γ = 0.2, 0.901 against 0.881 at γ = 0.1): DIP-CA's masks steer later activations toward the
  cache.
* **The paper's bytes/bandwidth model** is far more optimistic whenever flash is read: half cached,
  284.0 against 26.2 tokens/s for DIP and 503.4 against 56.8 at γ = 0.2; it agrees only when nothing
  comes from flash (768.2 against 762.9 at γ = 0). `hardware_comparison.ipynb` takes the gap apart."""

PROSE["sparsity_tradeoff"] = """## What this shows

The numbers are from the full-size sweep above (the `SMALL` run has two policies on 128 tokens); the
dense model's perplexity on these tokens is 12.74.

* **At keep 1.0 every policy is the dense model**: no mask to wait for, so the uncached half of the MLP
  is read ahead in 90 requests of 277.2 KB per token, 136.9 tokens/s. Every per-token policy below keep
  1.0 is slower than that on this phone -- 0.08-0.58x in `speedup_vs_dense`, the speed-up over this
  dense model with the same cache -- which is why the speed curves jump at keep 1.0.
* **dip and threshold** cut the weights read from flash about in proportion to keep (dip: 22.31 MB/token
  at keep 0.9, 3.54 at 0.2), but a token then issues 1,132-2,001 requests of 8.7-29.1 KB, a layer's
  only once its mask is known: dip runs at 11.1 tokens/s at keep 0.9 (0.08x dense), 26.2 at 0.5
  (0.19x), 69.4 at 0.2 (0.51x). Its perplexity is 13.47 at keep 0.7 (top-1 agreement 0.892), 17.60 at
  0.5, 33.64 at 0.4, then collapses (240 at 0.3, 4,604 at 0.2). threshold tracks dip in speed and
  accuracy (27.7 tokens/s, perplexity 17.82 at keep 0.5).
* **glu-prune is the most accurate at every keep below 0.9** (at 0.9 all three are within 0.03 of
  dense) -- it prunes only W_down -- at perplexity 12.89 for keep 0.5 and 19.53 for keep 0.2, and faster
  than dip at equal keep (32.7 and 79.5 tokens/s, 0.24x and 0.58x dense): W_up and W_gate are dense,
  need no mask and are read ahead, and only W_down waits for its mask.
* **static** is DRAM-bound where its fixed set fits the cache (keep ≤ 0.5: hit rate 1.000,
  762.9-943.3 tokens/s, 5.57-6.89x dense) but the model collapses there (perplexity 137,889 at keep 0.5,
  35,899,669 at 0.2). Past the budget it reads its overflow in a few large prefetched requests (keep
  0.9: 62 requests of 359.2 KB, 149.9 tokens/s, 1.09x dense, at perplexity 23.99).
* **Perplexity against tokens/s**: the front is threshold and glu-prune at keep 0.9 (11.2 and 27.3
  tokens/s, perplexity 12.73, level with dense), the dense model (136.9 at 12.74) and static at keep 0.9
  and 0.8 (149.9 at 23.99, 188.2 at 108), the only configurations faster than dense within 10x its
  perplexity, at 1.9x and 8.5x of it. No per-token policy is on the front's fast end: on this model and
  phone, reading the dense MLP ahead beats reading fewer columns on demand.
* **The paper's bytes/bandwidth model ranks them the other way**: it puts dip at keep 0.5 at 284.0
  tokens/s, above dense at 147.2, because it charges bytes at the flash's full bandwidth and knows
  neither pages nor the wait for a mask."""

PROSE["your_own_policy"] = """## What this shows

The numbers are from the full-size sweep above (the `SMALL` run has two keeps, one ratio and 128 tokens).

* **The plugin ran wherever DIP did**: the same sweep, closed loop and device model, its `ratio` checked
  like a built-in parameter, its points keyed by the policy file's source hash (edit the policy cell and
  rerun: its points run again, DIP's are reused).
* **The floor cuts reads**: at ratio 0.02 dip-floor reads a little less than DIP at the same keep (keep
  0.75: 71.7% of the up/gate and 54.2% of the down columns, 15.73 MB of weights per token against DIP's
  18.31); at ratio 0.1 it reads 16-21% of the up/gate and 13-14% of the down columns whatever the keep.
* **Ratio 0.02 behaves like DIP at a slightly lower keep**: it joins DIP on the Pareto front (three of
  its five points: keep 0.75, 0.5 and 0.35), trading a little accuracy for a little speed -- keep 0.5: 28.6
  tokens/s at perplexity 19.70 against DIP's 26.2 at 17.60 -- and at keep 0.35 it beats DIP at 0.35 on
  both (44.7 tokens/s at 62.4 against 42.9 at 69.0), where both have lost most of the accuracy already.
  Per byte of flash it is no better: 15.73 MB/token at keep 0.75 give 14.82, about what DIP's line between
  keep 0.5 and 0.75 gives at that traffic. Larger ratios fall off: at 0.05, 8.24 MB/token cost perplexity
  72.9 (keep 0.5) where DIP reads 7.24 MB at 69.0 (keep 0.35); at 0.1 the model collapses (perplexity
  61,000-68,000). The columns below a few percent of a token's largest activation are not the ones DIP
  gives up first; together they matter (dense: 12.74 over the same tokens).
* **Speed**: nothing here beats the dense model with the same cache on this phone (136.9 tokens/s): DIP
  runs at 15.9-59.1 tokens/s (0.12-0.43x), dip-floor at 17.9-87.0 (0.13-0.64x), its fastest points being
  collapsed ones."""

PROSE["hardware_comparison"] = """## What this shows

The numbers are from the full-size sweep above (the `SMALL` run has two devices and 128 tokens).

* **Accuracy is the same on every device**: dense 12.74, DIP 17.60 (KL 0.366, top-1 agreement 0.718),
  DIP-CA at γ 0.2 74.61 (KL 1.791, top-1 0.410). So are the hit rates (0.500, 0.554, 0.813; in the closed
  loop 0.500, 0.556, 0.827) and the weights read from flash (24.88, 11.10, 4.64 MB/token).
* **Dense with the same cache is the fastest on every real device**: 136.9 tokens/s on both UFS 4.0
  phones (8 and 12 GB give identical results), 74.8 on the old UFS 3.1 phone, 273.8 on the DDR5 + NVMe
  Gen4 laptop, 219.4 on the M2. DIP-CA reaches 56.8, 31.9, 182.5 and 84.5 there -- 0.41x, 0.43x, 0.67x
  and 0.39x the dense model (`speedup_vs_dense`), 1.7-2.4x plain DIP (26.2, 18.8, 77.7, 39.0; 0.18-0.28x
  dense). Only on paper-a18, where flash is a pure bandwidth, does DIP-CA beat dense (181.1 against 38.8
  tokens/s, 4.67x; DIP 2.15x), as in the paper -- at perplexity 74.61 instead of 12.74.
* **The paper's model against the device model**: for dense reading they agree within 0.95-1.08x; for
  DIP-CA the paper's model is 8.86x more optimistic on the UFS 4.0 phones, 8.32x on the old phone, 9.48x
  on the M2, 4.82x on the laptop and 1.00x on paper-a18, which is the paper's own formula.
* **Where the gap comes from**: a missed column costs whole pages, so DIP-CA's 4.64 MB of missed weights
  are 20.35 MB of reads (DIP: 11.10 MB are 33.68 MB), issued as 1,812 requests of 11.2 KB per token, and
  a layer's reads can start only once its mask is known. The UFS 4.0 phone's flash is busy 16.6 ms per
  token for them (about 1.2 GB/s), against 7.3 ms for dense's 24.94 MB in 90 read-ahead requests of
  277.2 KB.

The paper's model is thus a ceiling for large, queue-filling reads, not a prediction for per-column
reads of a small model's weights."""


# ------------------------------------------------------------------------------------- your_own_policy
POLICY_INTRO = """# Your own masking policy, kept outside dipsim

A researcher's idea usually starts as a few lines of numpy. dipsim takes it as a **plugin**: a Python file
(or an installed package) that registers its classes with the decorators the built-in policies use, named
in an experiment (`plugins: [my_policy.py]`), on the command line (`--plugin my_policy.py`, every verb) or
loaded from Python (`simulator.plugins.load`). Its name then works wherever `dip` does -- replay, the
closed loop, sweeps on worker processes or Dask, plots, the report -- with its parameters checked like a
built-in's, and a broken plugin fails in one line naming the file.

This notebook writes a 20-line policy into a file outside the package, loads it, and sweeps it against
DIP on SmolLM2-135M (1024 tokens of the default corpus) with an LRU cache holding half the MLP on the 12 GB
UFS 4.0 phone, every configuration also run inside the real model for its accuracy (`accuracy: true`).

""" + results_note("two keeps, one ratio")

POLICY_MD = """## The policy: DIP that skips weak columns

**dip-floor** keeps DIP's top-k columns of each layer (|x| for W_up/W_gate, |GLU(x)| for W_down) except
those scoring below `ratio` times the layer's largest score on that token: where a token's activations are
concentrated it reads fewer than k columns, where they are flat it reads k, like DIP. `keep` is then an upper
bound, and the question is whether the columns it skips cost accuracy. The class declares its parameter
with `common.params.param` (default, check, help): that is what makes `ratio` a checked experiment key and
a `--ratio` option. The file is written into `OUT`, outside the package."""

POLICY_CODE = """from simulator import masking, plugins

POLICY = '''# dip-floor: DIP that skips the columns scoring below ratio x the layer's largest score.
from dataclasses import dataclass

import numpy as np

from common.params import number, param
from simulator.kernels import topk_mask
from simulator.masking import MaskingPolicy, register_masking


@register_masking("dip-floor")
@dataclass(frozen=True)
class DIPFloor(MaskingPolicy):
    ratio: float = param(0.05, number(0, 1), "dip-floor: skip columns scoring below ratio x the largest score",
                         metavar="R")

    def _select(self, scores, resident, k):       # scores [rows, columns], k per row
        return topk_mask(scores, k) & (scores >= self.ratio * scores.max(axis=1, keepdims=True))

    def select_layer(self, layer, scores, k):     # one layer, all tokens as rows: one vectorized call
        scores = np.asarray(scores, dtype=np.float32)
        return self._select(scores, None, np.full(scores.shape[0], int(k)))
'''
POLICY_FILE = in_root(OUT) / "dip_floor.py"
POLICY_FILE.parent.mkdir(parents=True, exist_ok=True)
POLICY_FILE.write_text(POLICY)
plugin, = plugins.load([str(POLICY_FILE)])
print(f"loaded {shown(POLICY_FILE)}: {plugin.names}, source hash {plugin.digest} (in every result key it touches)")

# a first look on random scores: never more than DIP's k, fewer where a few columns dominate
rng = np.random.default_rng(0)
scores = rng.lognormal(sigma=2.0, size=(4, 1536)).astype(np.float32)
for name, params in (("dip", {}), ("dip-floor", {"ratio": 0.05})):
    kept = masking.make(name, **params).select(scores, None, 768).sum(axis=1)
    print(f"{name:9s} keeps {kept.tolist()} of 1536 columns (k = 768)")"""

POLICY_FULL = ("dip-floor (a plugin) against dip: keep x ratio, LRU holding half the MLP, accuracy in the loop", '''\
    "plugins": [str(POLICY_FILE)],
    "base": {"cache": "lru", "dram_fraction": 0.5, "device": "phone-12gb-ufs40", "accuracy": True},
    "grid": {"masking": ["dip", "dip-floor"], "keep": [0.75, 0.5, 0.35, 0.25], "ratio": [0.02, 0.05, 0.1]},''')

POLICY_SMALL = ("tiny: dip and dip-floor at two keeps, 128 tokens (accuracy over 32)", '''\
    "plugins": [str(POLICY_FILE)],
    "base": {"cache": "lru", "dram_fraction": 0.5, "device": "phone-12gb-ufs40", "warmup": 8, "calib_tokens": 16,
             "accuracy": True, "accuracy_tokens": 32},
    "grid": {"masking": ["dip", "dip-floor"], "keep": [0.5, 0.25], "ratio": [0.05]},''')

POLICY_TABLE_MD = """## The sweep

`keep` is what the run allows; `keep, up/gate` and `keep, down` are the shares of the columns each policy
really read (DIP: exactly keep; dip-floor: at most keep). DIP takes no `ratio`: the grid's ratios collapse
to one DIP point per keep (the sweep says so when it starts)."""

POLICY_TABLE = '''COLUMNS.update({"p.ratio": ("ratio", 1, "{:g}"), "m.upgate.keep": ("keep, up/gate", 1, "{:.3f}"),
                "m.down.keep": ("keep, down", 1, "{:.3f}")})
if "m.dense_perplexity" in df.columns:
    print(f"dense model over the same tokens: perplexity {df['m.dense_perplexity'].iloc[0]:.2f}")
table(df, ["p.masking", "p.keep", "p.ratio", "m.upgate.keep", "m.down.keep", "m.hit_rate", "m.flash_bytes_per_token",
           "m.tokens_per_s", "m.speedup_vs_dense", "m.perplexity", "m.kl_to_dense"],
      sort=["p.masking", "p.keep", "p.ratio"])'''

POLICY_TRADE_MD = """## Perplexity against tokens/s: the plugin beside DIP

Every configuration is a point, coloured by its policy and labelled with its keep (and dip-floor's
ratio); the black line is the Pareto front over both, and a configuration above 10x the dense perplexity
sits on the dashed line with its value. The sweep also wrote `report.html` into its results folder: the
same points in an interactive page (hover, filters, an accuracy budget) that opens in any browser, offline."""

POLICY_TRADE = '''if "m.perplexity" in df.columns:
    label = lambda r: f"k{r['p.keep']:g}" + (f" r{r['p.ratio']:g}" if r["p.masking"] == "dip-floor" else "")
    fig, axes, front = tradeoff(df, colour="p.masking", text=label,
                                title=f"Perplexity against tokens/s (labels: keep, ratio) -- {plots.context(df)}")
    render(fig)
    display(table(front, ["p.masking", "p.keep", "p.ratio", "m.tokens_per_s", "m.perplexity", "m.kl_to_dense"]))
else:
    print(NO_ACCURACY)
print(f"interactive report: {shown(results_dir / 'report.html')}")'''

POLICY_LINES_MD = """## Flash traffic and accuracy against keep

One line per policy (and dip-floor's ratio): the weights read from flash per token and the perplexity."""

POLICY_LINES = '''d = df.assign(policy=[m if m == "dip" else f"{m} r{r:g}" for m, r in zip(df["p.masking"], df["p.ratio"])])
fig, ax = plots.lines(d, "p.keep", ["m.flash_bytes_per_token", "m.perplexity"] if "m.perplexity" in d.columns
                      else ["m.flash_bytes_per_token"], "policy",
                      title=f"dip-floor against dip -- {plots.context(d, skip=('p.keep',))}")
render(fig)'''


def notebook(name: str, intro: str, full: tuple[str, str], small: tuple[str, str], body: list,
             helpers: bool = False, before: list = ()) -> list:
    """The cells of a notebook of the common shape: intro, parameters, set-up (and the trade-off figure's
    helpers), the cells the sweep needs (``before``), the sweep (full or small), the notebook's own cells,
    then what the figures show."""
    return [
        new_markdown_cell(intro),
        params_cell(name),
        new_code_cell(SETUP + ("\n\n\n" + TRADEOFF if helpers else "")),
        *before,
        new_code_cell(run_cell(name, full, small)),
        *body,
        new_markdown_cell(PROSE[name]),
    ]


def build(only: list[str] | None = None) -> list[Path]:
    """Write the notebooks (those named in ``only``, else all four) without outputs."""
    md, code = new_markdown_cell, new_code_cell
    cells = {
        "gamma_tradeoff": lambda: notebook("gamma_tradeoff", GAMMA_INTRO, GAMMA_FULL, GAMMA_SMALL,
                 [md(GAMMA_TABLE_MD), code(GAMMA_TABLE), md(GAMMA_VS_MD), code(GAMMA_VS), md(GAMMA_ACC_MD),
                  code(GAMMA_ACC), md(GAMMA_TRADE_MD), code(GAMMA_TRADE)], helpers=True),
        "sparsity_tradeoff": lambda: notebook("sparsity_tradeoff", SPARSITY_INTRO, SPARSITY_FULL, SPARSITY_SMALL,
                 [code(SPARSITY_TABLE), md(SPARSITY_VS_MD), code(SPARSITY_VS), md(SPARSITY_ACC_MD), code(SPARSITY_ACC),
                  md(SPARSITY_TRADE_MD), code(SPARSITY_TRADE)], helpers=True),
        "your_own_policy": lambda: notebook("your_own_policy", POLICY_INTRO, POLICY_FULL, POLICY_SMALL,
                 [md(POLICY_TABLE_MD), code(POLICY_TABLE), md(POLICY_TRADE_MD), code(POLICY_TRADE),
                  md(POLICY_LINES_MD), code(POLICY_LINES)], helpers=True, before=[md(POLICY_MD), code(POLICY_CODE)]),
        "hardware_comparison": lambda: notebook("hardware_comparison", HARDWARE_INTRO, HARDWARE_FULL, HARDWARE_SMALL,
                 [code(HARDWARE_PLOT), md(HARDWARE_SPEEDUP_MD), code(HARDWARE_SPEEDUP), md(HARDWARE_SPEED_MD),
                  code(HARDWARE_SPEED), md(HARDWARE_ACC_MD),
                  code(HARDWARE_ACC), md(HARDWARE_TABLE_MD), code(HARDWARE_TABLE)]),
    }
    unknown = sorted(set(only or ()) - set(cells))
    if unknown:
        raise SystemExit(f"_make.py: no notebook {', '.join(unknown)}; the notebooks are {', '.join(cells)}")
    return [write(name, make()) for name, make in cells.items() if not only or name in only]


def execute(paths: list[Path]) -> None:
    """Run each notebook in place from the repository root with this Python (a kernel spec made for it)."""
    import json
    import tempfile
    import time

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
            t0 = time.perf_counter()
            km = AsyncKernelManager(kernel_name="dipsim-venv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[tmp]))
            NotebookClient(nb, km=km, timeout=3600, resources={"metadata": {"path": str(HERE.parent)}}).execute()
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
            nbformat.write(nb, p)
            print(f"executed {p} in {time.perf_counter() - t0:.0f} s ({p.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    written = build([a for a in sys.argv[1:] if not a.startswith("--")])
    for p in written:
        print(f"wrote {p}")
    if "--execute" in sys.argv[1:]:
        execute(written)
