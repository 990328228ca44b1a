"""``dipsim optimize``: search an experiment's ``search:`` space with Optuna (resumable)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import DipsimError
from common.tables import print_table

from .options import add_verb, positive_int


def add_parser(sub) -> None:
    s = add_verb(sub, "optimize", run, "search the design space of an experiment's search: section (Optuna)")
    s.add_argument("experiment", help="experiment YAML with a search: section (see experiments/search.yaml)")
    s.add_argument("--out", help="study folder (default results/<experiment name>-search)")
    s.add_argument("--study", metavar="NAME", default="default",
                   help="study name: a new name starts a new study in the same folder (outputs in OUT/NAME); "
                        "needed to search a changed space there (default: default)")
    s.add_argument("--trials", type=positive_int, help="finished trials to reach (default: search.trials of the "
                                                       "file); a rerun with more continues the study; with "
                                                       "search.each, per study that has something to search")
    s.add_argument("--jobs", type=positive_int, default=1, help="trials run at once, in worker processes (default 1)")
    s.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local process pool (default) or Dask distributed")
    s.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    s.add_argument("--compare", metavar="RESULTS", help="a finished sweep's results folder: its points and front "
                                                        "are drawn on pareto.png beside the search's (not "
                                                        "with search.each)")
    s.add_argument("--dry-run", action="store_true", help="check the file, print the space and stop")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(a: argparse.Namespace) -> int:
    """Search the space of an experiment's search: section with Optuna (TPE or NSGA-II, multi-objective, with
    constraints). Every trial is a real sweep point: replay, the device engine against its dense baseline, the
    closed loop on the real model (reusing the accuracy store). The study lives in OUT/study.journal: a killed
    run resumes where it stopped, losing at most the trials in flight; a rerun with a changed space is refused
    unless --study names a new study. Writes OUT/trials.parquet, OUT/pareto.png and OUT/best.yaml (a
    one-point experiment that sweep, replay --config and eval --config run as is) and prints the front. A
    search.each section splits the search into one study per variant (each method, device, trace: in
    OUT/<trace>/<device>/<method>/) and writes their fronts side by side: OUT/fronts.png (one front per
    method), fronts.csv and winners.csv (where each method's front wins), printed at the end."""
    from common.io import check_folder

    from ..search import load_searches

    variants = load_searches(a.experiment)
    search = variants[0].search
    out = Path(a.out) if a.out else Path("results") / f"{search.exp.name}-search"
    if out.exists() and not out.is_dir():
        raise DipsimError(f"--out {out}: exists and is not a folder; give the study folder")
    if not _study_name_ok(a.study):
        raise DipsimError(f"--study {a.study!r}: letters, digits, '-', '_' and '.' only")
    split = bool(variants[0].labels)
    if split and a.compare:
        raise DipsimError(f"--compare: {a.experiment} splits its search (search.each); compare a one-study search")
    compare = _compare(a.compare)
    objs = ", ".join(f"{o.metric} ({o.direction})" for o in search.objectives)
    cons = ", ".join(f"{k}={v}" for k, v in search.constraints.items()) or "none"
    most = max(v.search.trials for v in variants)
    what = f"{len(variants)} studies of up to {a.trials or most} trials" if split else \
        f"{a.trials or search.trials} trials"
    print(f"optimize {search.exp.name}: {what}, {search.sampler}; objectives {objs}; constraints {cons} -> {out}",
          file=sys.stderr)
    if a.dry_run:
        for v in variants:
            print(f"{v.name + ': ' if split else ''}" + ("; ".join(f"{d.name}: {d.describe()}" for d in v.search.dims)
                                                        or f"nothing to search: {v.search.trials} trial"))
        return 0
    check_folder(out, "--out", create=False)
    if split:
        return _run_split(a, variants, out)
    res = _one(a, search, out, compare)
    _print_result(search, res, cons)
    return 0


def _one(a: argparse.Namespace, search, out: Path, compare=None) -> dict:
    """Run one study to its trial budget and write its outputs."""
    from ..search import run_search, study_folder, write_outputs

    study = run_search(search, out, study_name=a.study, trials=a.trials, jobs=a.jobs, executor=a.executor,
                       scheduler=a.scheduler, progress=not a.quiet)
    return write_outputs(search, study, study_folder(out, a.study), compare=compare,
                         compare_name=Path(a.compare).name if a.compare else "sweep")


def _run_split(a: argparse.Namespace, variants, out: Path) -> int:
    """Each variant's study in OUT/<labels>/, the fronts side by side in OUT after each one."""
    from ..search import run_variants

    res = run_variants(variants, out, study_name=a.study, trials=a.trials, jobs=a.jobs, executor=a.executor,
                       scheduler=a.scheduler, progress=not a.quiet)
    if res.get("winners"):
        print("Where each study's front wins (the front of all feasible trials of a panel together):")
        print_table(res["winners"])
        print("Per study:")
        print_table(res["summary"])
    for f in res.get("files", []):
        print(f"wrote {f}")
    return 0


def _print_result(search, res: dict, cons: str) -> None:
    from ..search import front_rows

    df = res["table"]
    if not len(df):
        print("no trial finished")
        return
    n_feas = int(df["feasible"].sum())
    print(f"{len(df)} trials, {n_feas} feasible ({cons})")
    if n_feas:
        print("Pareto front of the feasible trials:")
        print_table(front_rows(search, df))
    else:
        print("no feasible trial: the closest ones (c.*: how far each constraint is from met, <= 0 is met):")
        print_table(front_rows(search, res["closest"], which="all"))
    for f in res["files"]:
        print(f"wrote {f}")
    if res.get("warning"):
        print(f"dipsim: warning: {res['warning']}")


def _study_name_ok(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name))


def _compare(results: str | None):
    if not results:
        return None
    from ..sweep import load_results

    return load_results(results)
