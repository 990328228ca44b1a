"""``dipsim optimize``: search an experiment's ``search:`` space with Optuna (resumable)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import DipsimError
from common.params import boolean
from common.tables import print_table

from ..search.choose import option
from ..search.space import CONSTRAINTS
from .options import add_verb, positive_int


def add_parser(sub) -> None:
    s = add_verb(sub, "optimize", run, "search the design space of an experiment's search: section (Optuna)")
    s.add_argument("experiment", help="experiment YAML with a search: section (see experiments/search.yaml)")
    s.add_argument("--out", help="study folder (default results/<experiment name>-search)")
    s.add_argument("--study", metavar="NAME", default="default",
                   help="study name: a new name starts a new study in the same folder (outputs in OUT/NAME); "
                        "needed to search a changed space there (default: default)")
    s.add_argument("--trials", type=positive_int, help="finished trials to reach (default: search.trials of the "
                                                       "file); a rerun with more continues the study")
    s.add_argument("--jobs", type=positive_int, default=1, help="trials run at once, in worker processes (default 1)")
    s.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local process pool (default) or Dask distributed")
    s.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address (default: a LocalCluster)")
    s.add_argument("--compare", metavar="RESULTS", help="a finished sweep's results folder: its points and front "
                                                        "are drawn on pareto.png beside the search's (not "
                                                        "with search.each)")
    budget = s.add_argument_group("a budget chosen afterwards (runs no trial)",
                                  "Choose best.yaml and the printed answer from the trials the study already "
                                  "holds, under a budget given here in place of the file's constraint of the "
                                  "same name (the file's others stay); trials.parquet's feasible and c.* columns "
                                  "follow it. Nothing runs; the study must exist (run without these first).")
    for name, (check, _, meaning) in CONSTRAINTS.items():
        budget.add_argument(option(name), dest=name, metavar="VALUE",
                            help=f"{meaning} ({check.accepts}{'; false drops it' if check is boolean else ''})")
    s.add_argument("--dry-run", action="store_true", help="check the file, print the space and stop")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(a: argparse.Namespace) -> int:
    """Search the space of an experiment's search: section with Optuna (TPE or NSGA-II, multi-objective, with
    constraints). Every trial is a real sweep point: replay, the device engine against its dense baseline, the
    closed loop on the real model (reusing the accuracy store). The study lives in OUT/study.journal: a killed
    run resumes where it stopped, losing at most the trials in flight; a rerun with a changed space is refused
    unless --study names a new study. Writes OUT/trials.parquet, OUT/pareto.png and OUT/best.yaml (a
    one-point experiment that sweep, replay --config and eval --config run as is) and prints the front. With a
    budget option (--max-perplexity-increase, ...) it runs no trial: it chooses best.yaml and the front from the
    study's finished trials under that budget. A search.each section splits the search into one study per
    variant (each method, device, trace: in OUT/<trace>/<device>/<method>/) and writes their fronts side by
    side: OUT/fronts.png (one front per method), fronts.csv and winners.csv (where each method's front wins),
    printed at the end."""
    from common.io import check_folder

    from ..search import load_searches, with_budget

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
    given = {k: getattr(a, k) for k in CONSTRAINTS if getattr(a, k) is not None}
    if given and split:
        raise DipsimError(f"{option(next(iter(given)))}: {a.experiment} splits its search (search.each); "
                          f"a budget given afterwards chooses within one study's trials")
    if given and a.trials:
        raise DipsimError(f"{option(next(iter(given)))} chooses among the finished trials and runs none; "
                          f"give --trials in a run without it")
    chosen = with_budget(search, given) if given else search
    objs = ", ".join(f"{o.metric} ({o.direction})" for o in search.objectives)
    cons = ", ".join(f"{k}={v}" for k, v in chosen.constraints.items()) or "none"
    most = max(v.search.trials for v in variants)
    what = ("choosing among the finished trials (none run)" if given else
            f"{len(variants)} studies of up to {a.trials or most} trials, {search.sampler}" if split else
            f"{a.trials or search.trials} trials, {search.sampler}")
    print(f"optimize {search.exp.name}: {what}; objectives {objs}; constraints {cons} -> {out}", file=sys.stderr)
    if a.dry_run:
        for v in variants:
            print(f"{v.name + ': ' if split else ''}" + ("; ".join(f"{d.name}: {d.describe()}" for d in v.search.dims)
                                                        or f"nothing to search: {v.search.trials} trial"))
        return 0
    check_folder(out, "--out", create=False)
    if split:
        return _run_split(a, variants, out)
    search, res = _run_or_choose(a, search, chosen if given else None, out, a.trials or search.trials, compare)
    _print_result(search, res, cons)
    return 0


def _run_or_choose(a: argparse.Namespace, search, chosen, out: Path, trials: int, compare):
    """Run the study (or, with ``chosen``, the search under a budget given on the command line, take its
    finished trials as they are) and write the outputs; return the search they follow and what they say."""
    from ..search import finished_study, run_search, study_folder, write_outputs

    held = None
    try:
        if chosen is not None:
            study, held = finished_study(search, out, a.study)
            search = chosen
        else:
            study = run_search(search, out, study_name=a.study, trials=trials, jobs=a.jobs, executor=a.executor,
                               scheduler=a.scheduler, progress=not a.quiet)
        return search, write_outputs(search, study, study_folder(out, a.study), compare=compare,
                                     compare_name=Path(a.compare).name if a.compare else "sweep")
    finally:
        if held is not None:
            held.close()


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
