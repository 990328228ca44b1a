"""The studies of a split search (``search.each``) side by side, written into its folder after every
finished study (each file atomically):

    fronts.parquet   every study's trials, with a column ``v.<key>`` per label (``v.trace``, ``v.device``,
                     ``v.masking``, ...; the keys of ``each`` after the trace)
    fronts.png       one panel per value of the labels but the last, one Pareto front per value of the
                     last label (a masking method: "which method wins, where")
    fronts.csv       one row per study: trials, feasible trials, front points, the best feasible trial on
                     the first objective (its objectives and speed-up against dense) and the studies of the
                     same panel whose front dominates every point of its front (``dominated_by``)
    winners.csv      per panel, the front of all its studies' feasible trials together, cut into stretches
                     held by one study: where on the first objective each one wins
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.io import atomic, atomic_write

from .front import nondominated
from .each import Variant
from .outputs import objective_matrix, write_outputs
from .space import Search
from .study import DEFAULT_STUDY, run_search, study_folder


def run_variants(variants: list[Variant], out: Path, *, study_name: str = DEFAULT_STUDY, trials: int | None = None,
                 log: Callable[[str], None] | None = None, **run) -> dict[str, Any]:
    """Run each variant's study in ``OUT/<labels>/`` (``trials``, when given, for the ones with
    something to search; a study with nothing to search runs its one trial) and write its outputs,
    then the fronts side by side into ``OUT`` (``study_folder(OUT, study_name)``) after each one, so
    that an interrupted run leaves the finished studies' fronts. ``run``: ``run_search``'s options
    (jobs, executor, scheduler, progress, evaluate). A variant that shares (``Variant.shares``) with an
    earlier one runs that one's finished designs first. Returns ``write_fronts``' result."""
    from optuna.trial import TrialState

    say = log or (lambda s: print(s, file=sys.stderr))
    done: list[tuple[dict[str, str], Any]] = []
    res: dict[str, Any] = {}
    designs: dict[tuple, list[dict[str, Any]]] = {}
    for i, v in enumerate(variants):
        say(f"[{i + 1}/{len(variants)}] {v.name}" + (" (the designs searched for the first study like it)"
                                                      if v.shares in designs else ""))
        folder = out / v.folder
        study = run_search(v.search, folder, study_name=study_name, trials=trials if v.search.dims else None,
                           log=say, designs=designs.get(v.shares), **run)
        if v.shares and v.shares not in designs:
            designs[v.shares] = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        df = write_outputs(v.search, study, study_folder(folder, study_name))["table"]
        say(f"{v.name}: {len(df)} trials, {int(df['feasible'].sum()) if len(df) else 0} feasible")
        done.append((v.labels, df))
        res = write_fronts(v.search, done, study_folder(out, study_name))
    return res


def fronts_table(labelled: list[tuple[dict[str, str], Any]]):
    """One table of the studies' trials tables, each with its labels as ``v.<key>`` columns."""
    import pandas as pd

    parts = [df.assign(**{f"v.{k}": v for k, v in labels.items()}) for labels, df in labelled if len(df)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def panels(df, keys: list[str]):
    """``(labels of the panel, its rows)`` per value of ``keys`` (all labels but the last), in order."""
    if not keys:
        return [({}, df)]
    out = []
    for vals, sub in df.groupby([f"v.{k}" for k in keys], sort=False):
        vals = vals if isinstance(vals, tuple) else (vals,)
        out.append((dict(zip(keys, vals)), sub))
    return out


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether every row of ``b`` is dominated by some row of ``a`` (minimized; both non-empty)."""
    return bool(len(a) and len(b)) and all(((a <= r).all(axis=1) & (a < r).any(axis=1)).any() for r in b)


def summary(search: Search, df, keys: list[str]) -> list[dict[str, Any]]:
    """The rows of ``fronts.csv`` (see the module docstring); ``keys``: the labels, the front's last."""
    o1, o2 = (search.objectives + search.objectives)[:2]
    rows = []
    for where, sub in panels(df, keys[:-1]):
        fronts = {m: objective_matrix(search, t[t["pareto"]]) for m, t in sub.groupby(f"v.{keys[-1]}", sort=False)}
        for m, t in sub.groupby(f"v.{keys[-1]}", sort=False):
            feas = t[t["feasible"]]
            row: dict[str, Any] = {**where, keys[-1]: m, "trials": len(t), "feasible": len(feas),
                                   "front_points": int(t["pareto"].sum())}
            if len(feas):
                best = feas.iloc[int(np.argmin(objective_matrix(search, feas)[:, 0]))]
                row.update({f"best_{o1.metric}": best[f"m.{o1.metric}"], f"its_{o2.metric}": best[f"m.{o2.metric}"],
                            "its_speedup_vs_dense": best.get("m.speedup_vs_dense"), "best_trial": int(best["trial"])})
            row["dominated_by"] = " ".join(str(n) for n, f in fronts.items() if n != m and _dominates(f, fronts[m]))
            rows.append(row)
    return rows


def winners(search: Search, df, keys: list[str]) -> list[dict[str, Any]]:
    """Per panel, the front of all its feasible trials together, sorted along the first objective and
    cut into stretches held by one study (the last label): where each one wins."""
    o1, o2 = (search.objectives + search.objectives)[:2]
    rows = []
    for where, sub in panels(df, keys[:-1]):
        sub = sub.reset_index(drop=True)
        idx = nondominated(objective_matrix(search, sub), sub["feasible"].to_numpy(bool))
        front = sub.iloc[idx].sort_values(f"m.{o1.metric}", kind="stable")
        stretch: list[Any] = []
        for _, r in list(front.iterrows()) + [(None, None)]:
            if stretch and (r is None or r[f"v.{keys[-1]}"] != stretch[0][f"v.{keys[-1]}"]):
                x, y = [s[f"m.{o1.metric}"] for s in stretch], [s[f"m.{o2.metric}"] for s in stretch]
                sp = [s.get("m.speedup_vs_dense", np.nan) for s in stretch]
                rows.append({**where, keys[-1]: stretch[0][f"v.{keys[-1]}"], "points": len(stretch),
                             f"{o1.metric}_from": min(x), f"{o1.metric}_to": max(x),
                             f"{o2.metric}_from": min(y), f"{o2.metric}_to": max(y),
                             "speedup_vs_dense_from": min(sp), "speedup_vs_dense_to": max(sp)})
                stretch = []
            if r is not None:
                stretch.append(r)
    return rows


def write_fronts(search: Search, labelled: list[tuple[dict[str, str], Any]], out: Path) -> dict[str, Any]:
    """Write fronts.parquet, fronts.png, fronts.csv and winners.csv into ``out``; return the tables
    (``summary``, ``winners``) and the files written. ``search``: any of the studies (they share
    objectives and constraints)."""
    import pandas as pd

    df = fronts_table(labelled)
    res: dict[str, Any] = {"files": [], "summary": [], "winners": []}
    keys = list(labelled[0][0]) if labelled else []
    if not len(df) or not keys:
        return res
    with atomic(out / "fronts.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    res["summary"], res["winners"] = summary(search, df, keys), winners(search, df, keys)
    for name, rows in (("fronts.csv", res["summary"]), ("winners.csv", res["winners"])):
        atomic_write(out / name, pd.DataFrame(rows).to_csv(index=False).encode())
    res["files"] = [out / "fronts.parquet", out / "fronts.csv", out / "winners.csv"]
    if len(search.objectives) >= 2:
        res["files"].append(_plot(search, df, keys, out / "fronts.png"))
    return res


def _plot(search: Search, df, keys: list[str], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from ..plots.search import method_fronts

    o1, o2 = search.objectives[:2]
    inc = search.constraints.get("max_perplexity_increase")
    limit = ("m.dense_perplexity", 1.0 + float(inc), f"perplexity budget (dense +{float(inc):.0%})") \
        if inc is not None and o2.metric == "perplexity" else None
    fig = method_fronts(df, f"m.{o1.metric}", f"m.{o2.metric}", front_key=f"v.{keys[-1]}",
                        panel_keys=[f"v.{k}" for k in keys[:-1]], maximize_x=o1.direction == "maximize",
                        minimize_y=o2.direction == "minimize", limit=limit)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
