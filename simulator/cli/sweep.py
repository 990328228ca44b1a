"""``dipsim sweep`` and ``dipsim plot``: run a YAML experiment (resumable); plot its results."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import DipsimError

from .. import plots
from .options import add_verb, positive_int, save_figure



def add_parser(sub) -> None:
    s = add_verb(sub, "sweep", run_sweep, "run a YAML sweep experiment (resumable)")
    s.add_argument("experiment", help="experiment YAML (see experiments/)")
    s.add_argument("--out", help="results folder (default results/<experiment name>)")
    s.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default 1)")
    s.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local process pool (default) or Dask distributed")
    s.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    s.add_argument("--dry-run", action="store_true", help="list the points (and the dropped ones) and stop")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = add_verb(sub, "plot", run_plot, "plot a sweep's results")
    s.add_argument("results", help="sweep results folder")
    s.add_argument("--kind", choices=plots.KINDS, default="auto",
                   help="gamma, keep, device, pareto (accuracy against speed, or keep against tokens/s without "
                        "accuracy), or auto: from the columns and the parameters that vary (default)")
    s.add_argument("--out", help="image to write (default RESULTS/<kind>.png)")


def run_sweep(a: argparse.Namespace) -> int:
    """Run every point of an experiment file (grid and zip axes over any parameter) and keep
    OUT/results.parquet current, one row per point. Every point is checked before any work. Rerunning
    resumes: finished points are reused, also after the file was edited (points whose parameters did not
    change)."""
    from ..sweep import load_experiment, run_sweep as sweep
    from ..sweep.run import check_jobs

    exp = load_experiment(a.experiment)
    from common.io import check_folder

    out = Path(a.out) if a.out else Path("results") / exp.name
    check_jobs(a.jobs, a.executor, a.scheduler)
    if a.dry_run:
        print(f"sweep {exp.name}: {len(exp.points)} points ({len(exp.dropped)} dropped)", file=sys.stderr)
        for p in exp.points:
            print(p.key)
        for k, why in exp.dropped:
            print(f"dropped {k}: {why}")
        return 0
    import shlex

    check_folder(out, "--out", create=False)   # the sweep makes the folder when it writes to it
    path = sweep(exp, out, jobs=a.jobs, executor=a.executor, scheduler=a.scheduler, progress=not a.quiet,
                 command=shlex.join(["dipsim", *a.argv]))
    print(f"results: {path}")
    if (out / "report.html").exists():
        print(f"report:  {out / 'report.html'} (open it in a browser)")
    return 0


def run_plot(a: argparse.Namespace) -> int:
    """Plot a results folder: by default the plot that fits its columns (accuracy against speed when the sweep
    measured both, else against gamma, keep, device or DRAM budget, whichever varies)."""
    from common.io import FIGURE_SUFFIXES, check_file, input_file

    from ..sweep import load_results

    # a given output is checked first: nothing is read for a figure that cannot be written
    out = check_file(a.out, "--out", FIGURE_SUFFIXES) if a.out else None
    try:
        res = input_file(a.results, "results folder", folder=True)
    except DipsimError as e:
        raise DipsimError(f"{e} (give the --out folder of a dipsim sweep)") from None
    out = out or check_file(res / f"{a.kind}.png", "--out", FIGURE_SUFFIXES)
    fig, _ = plots.plot(load_results(a.results), a.kind)
    save_figure(fig, out)
    print(f"wrote {out}")
    return 0
