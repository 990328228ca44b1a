"""A search's outputs, written into its study folder after every run (each file atomically):

    trials.parquet   every finished trial: ``trial``, ``key``, the point's parameters as ``p.<name>`` and
                     its metrics as ``m.<name>`` (the sweep's columns), ``feasible``, one ``c.<constraint>``
                     column per constraint (<= 0: met; computed from the metrics, so a budget chosen
                     afterwards, ``choose``, recomputes them), ``pareto`` (on the feasible front)
    pareto.png       the first two objectives: every trial, the front, and with ``compare`` a finished
                     sweep's points and front on the same axes
    best.yaml        the feasible trial best on the first objective, as a one-point experiment file that
                     ``dipsim sweep``, ``dipsim replay --config`` and ``dipsim eval --config`` run as is

``OUTPUT_HOOKS`` are called last with (study folder, trials table): the place for further writers
(an HTML report) to join without this module knowing them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.io import atomic, atomic_write

from ..sweep.experiment import flatten
from .front import closest, nondominated
from .space import Search, violations

#: writers called after the outputs with (study folder, trials table)
OUTPUT_HOOKS: list[Callable[[Path, Any], None]] = []


def trials_table(search: Search, study):
    """The finished trials as a DataFrame (see the module docstring), in trial order."""
    import pandas as pd
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        row: dict[str, Any] = {"trial": t.number, "key": t.user_attrs.get("key", "")}
        for k, v in flatten(t.user_attrs.get("point", {})).items():
            row[f"p.{k}"] = v if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True)
        row.update(t.user_attrs.get("metrics", {}))
        cons = violations(search.constraints, t.user_attrs.get("metrics", {})) if search.constraints else []
        for name, c in zip(search.constraints, cons):
            row[f"c.{name}"] = float(c)
        row["feasible"] = all(c <= 0 for c in cons)
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["pareto"] = False
        idx = nondominated(objective_matrix(search, df), df["feasible"].to_numpy(bool))
        df.loc[df.index[idx], "pareto"] = True
    for col in df.columns[df.dtypes == object]:
        if len({type(v) for v in df[col] if v is not None}) > 1:
            df[col] = [None if v is None else str(v) for v in df[col]]
    return df


def objective_matrix(search: Search, df) -> np.ndarray:
    """The trials' objective values, each turned so that lower is better."""
    return np.column_stack([df[f"m.{o.metric}"].to_numpy(float) * o.sign for o in search.objectives])


def best_row(search: Search, df):
    """The feasible trial best on the first objective (ties: the next objectives), or None."""
    feas = df[df["feasible"]] if len(df) else df
    if not len(feas):
        return None
    order = np.lexsort(objective_matrix(search, feas).T[::-1])
    return feas.iloc[int(order[0])]


def best_experiment(search: Search, row, study_trial: Any) -> dict[str, Any]:
    """The best trial as a one-point experiment (its resolved point as the base)."""
    params = dict(study_trial.user_attrs["point"])
    trace = params.pop("trace")
    cons = ", ".join(f"{k} {v}" for k, v in search.constraints.items()) or "no constraints"
    objs = ", ".join(f"{o.metric} {float(row['m.' + o.metric]):.6g}" for o in search.objectives)
    return {"name": f"{search.exp.name}-best",
            "description": f"trial {int(row['trial'])} of the search {search.exp.name} ({search.path}): the feasible "
                           f"trial with the best {search.objectives[0].metric} under {cons}; it measured {objs}",
            "trace": trace, "base": params}


def write_outputs(search: Search, study, folder: Path, *, compare=None, compare_name: str = "sweep") -> dict[str, Any]:
    """Write trials.parquet, pareto.png and best.yaml; return what a report prints (the table, the
    front's and the closest rows)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    df = trials_table(search, study)
    with atomic(folder / "trials.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    out: dict[str, Any] = {"table": df, "files": [folder / "trials.parquet"], "best": None}
    if not len(df):
        return out
    if len(search.objectives) >= 2:
        out["files"].append(_plot(search, df, folder / "pareto.png", compare, compare_name))
    best = best_row(search, df)
    if best is not None:
        doc = best_experiment(search, best, study.trials[int(best["trial"])])
        atomic_write(folder / "best.yaml", yaml.safe_dump(doc, sort_keys=False).encode())
        out["files"].append(folder / "best.yaml")
        out["best"] = best
    elif (folder / "best.yaml").exists():
        (folder / "best.yaml").unlink()        # from an earlier space: it no longer answers
    if search.constraints and not df["feasible"].any():
        viol = df[[f"c.{k}" for k in search.constraints]].to_numpy(float)
        out["closest"] = df.iloc[closest(viol)]
    _report(search, df, folder, out)
    for hook in OUTPUT_HOOKS:
        hook(folder, df)
    return out


def _report(search: Search, df, folder: Path, out: dict[str, Any]) -> None:
    """``report.html``, as a sweep writes it; a report that cannot be written costs the report (a
    warning in ``out``), never the trials."""
    from common.errors import DipsimError

    from ..report import table_source, write_report

    try:
        out["files"].append(write_report(df, folder / "report.html", title=f"search {search.exp.name}",
                                         source=table_source(folder / "trials.parquet")))
    except DipsimError as e:
        out["warning"] = f"no report: {e}"


def _plot(search: Search, df, path: Path, compare, compare_name: str) -> Path:
    from ..plots.search import search_front

    o1, o2 = search.objectives[:2]
    fig, _ = search_front(df, f"m.{o1.metric}", f"m.{o2.metric}", maximize_x=o1.direction == "maximize",
                          minimize_y=o2.direction == "minimize", compare=compare, compare_name=compare_name)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def front_rows(search: Search, df, which: str = "front") -> list[dict[str, Any]]:
    """Rows for a printed table: the trial, the parameters that vary, the objectives and constraints."""
    sub = df[df["pareto"]] if which == "front" else df
    sub = sub.sort_values(f"m.{search.objectives[0].metric}", ascending=search.objectives[0].direction == "minimize")
    shown = [f"p.{d.name}" for d in search.dims if f"p.{d.name}" in df.columns]
    extra = [c for c in ("m.speedup_vs_dense", "m.perplexity", "m.kl_to_dense") if c in df.columns]
    cols = shown + [f"m.{o.metric}" for o in search.objectives] + [c for c in extra if c[2:] not in
                                                                     {o.metric for o in search.objectives}]
    cols += [f"c.{k}" for k in search.constraints]
    rows = []
    for _, r in sub.iterrows():
        rows.append({"trial": int(r["trial"]), **{c if c.startswith("c.") else c.split(".", 1)[1]: _cell(r.get(c))
                                                  for c in cols}})
    return rows


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return v
