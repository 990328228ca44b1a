"""``dipsim mrc``: hit rate against the DRAM cache size."""
from __future__ import annotations

import argparse

from common.tables import print_table

from .options import add_verb, arg_type, replay_config, save_figure
from .replay import add_replay_options

#: the most cache sizes a curve takes (each is a replay, or a belady replay for OPT)
MAX_POINTS = 1001

def add_parser(sub) -> None:
    s = add_verb(sub, "mrc", run, "miss-ratio curve: hit rate against DRAM cache size")
    s.add_argument("--trace", required=True, help="trace file")
    add_replay_options(s, skip=("dram_fraction", "dram_bytes", "allocation", "allocation_params"))
    s.add_argument("--points", type=arg_type(int, lambda v: 2 <= v <= MAX_POINTS, f"a whole number in [2, {MAX_POINTS}]"),
                   default=21, help=f"cache sizes from 0 to 1, evenly spaced (default 21, at most {MAX_POINTS}: "
                                    f"a step of 0.1%% of the MLP)")
    s.add_argument("--no-opt", action="store_true", help="skip the OPT (belady) curve")
    s.add_argument("--out", default="mrc.csv", help="table to write (CSV, default mrc.csv)")
    s.add_argument("--plot", metavar="PNG", help="also write a plot")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(a: argparse.Namespace) -> int:
    """Hit rate against cache size (fraction of MLP weights, uniform allocation). Cache-oblivious masking with
    LRU: every size from one pass (stack distances) plus OPT (belady) per size; otherwise a replay per size."""
    import csv

    from common.io import FIGURE_SUFFIXES, atomic, check_outputs
    from traces.format import load

    from .. import mrc

    cfg = replay_config(a)
    out, _ = check_outputs([("--out", a.out, (".csv",)), ("--plot", a.plot, FIGURE_SUFFIXES)], [("--trace", a.trace)])
    t = load(a.trace)
    fractions = [round(i / (a.points - 1), 6) for i in range(a.points)]
    rows = mrc.curve(t, cfg, fractions=fractions, opt=not a.no_opt, progress=not a.quiet)
    rows = [{k: r[k] for k in sorted(r, key=_column_rank)} for r in rows]   # one column order for every policy
    with atomic(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print_table(rows)
    print(f"\nwrote {out}")
    if a.plot:
        fig, _ = mrc.plot_curve(rows, title=f"{t.meta['model']}: {_policy_text(cfg)}, keep {cfg.keep}, {t.n_tokens} tokens")
        save_figure(fig, a.plot, "--plot")
        print(f"wrote {a.plot}")
    return 0


def _policy_text(cfg) -> str:
    """The masking policy with the parameters it was given (``dip-ca, gamma 0.5``), for a title."""
    shown = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in cfg.masking_params.items() if v]
    return ", ".join([cfg.masking, *shown])


def _column_rank(key: str) -> int:
    """The CSV's column order: the budget, the capacities, per-group hit rates, whole-model hit rates."""
    if key == "dram_fraction":
        return 0
    if key.endswith("capacity_columns_per_layer"):
        return 1
    return 2 if key.count(".") == 2 else 3
