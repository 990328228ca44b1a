"""A sweep's results folder: ``results.parquet`` (one row per finished point, rewritten atomically
as points finish), ``points/<hash>.json`` (each finished point, written atomically), ``sweep.json``
and ``experiment.yaml`` (what was run). A rerun reuses every finished point whose resolved
parameters are unchanged -- also after the experiment file was edited -- and runs the rest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from common.errors import DipsimError
from common.io import atomic, atomic_write, make_folder
from common.jsonio import json_default

from .. import schedules
from .experiment import Experiment, Point, flatten

SWEEP_VERSION = 2


def write_parquet(out: Path, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    for col in df.columns[df.dtypes == object]:
        kinds = {type(v) for v in df[col] if v is not None}
        if len(kinds) > 1:      # e.g. weight_format "int4" beside 0.5, or keep 0.5 beside a per-layer list
            df[col] = [None if v is None else str(v) for v in df[col]]
    with atomic(out / "results.parquet") as tmp:
        df.to_parquet(tmp, index=False)


def load_results(out: str | os.PathLike):
    """The results of a sweep folder as a DataFrame (finished points only)."""
    import pandas as pd

    out = Path(out)
    if not out.is_dir():
        raise DipsimError(f"{out}: not a sweep results folder" if out.exists() else f"results folder not found: {out}")
    p = out / "results.parquet"
    if p.exists():
        try:
            return checked_table(pd.read_parquet(p), p)
        except DipsimError:
            raise
        except Exception as e:   # pyarrow raises several types for a damaged file
            raise DipsimError(f"{p}: not a readable parquet file ({type(e).__name__}); rerun the sweep to "
                              f"rewrite it from points/") from None
    rows = read_point_files(out)
    if not rows:
        raise DipsimError(f"{out}: no results (neither results.parquet nor points/*.json)")
    return checked_table(pd.DataFrame(rows), out / "points")


def checked_table(df, where: Path):
    """A results table as a sweep writes it, or a one-line refusal: at least one point, each point
    once, every metric column of a numeric metric (``simulator.metrics``) numeric, some of it finite."""
    import numpy as np
    import pandas as pd

    from ..metrics import METRICS

    if df.empty or "key" not in df.columns:
        raise DipsimError(f"{where}: no finished points in it")
    dup = df["key"][df["key"].duplicated()]
    if len(dup):
        raise DipsimError(f"{where}: point {dup.iloc[0]!r} appears {int((df['key'] == dup.iloc[0]).sum())} times "
                          f"(a damaged results file; rerun the sweep to rewrite it from points/)")
    numeric = [c for c in df.columns if c.startswith("m.") and METRICS.get(c.rsplit(".", 1)[1], ("text",))[0]
               not in ("text", "bool")]     # the metric table's numeric metrics (m.device is a name)
    finite = False
    for c in numeric:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = df[c][values.isna() & df[c].notna()]
        if len(bad):
            raise DipsimError(f"{where}: column {c} holds {bad.iloc[0]!r}, expected numbers")
        df[c] = values
        finite = finite or bool(np.isfinite(values.to_numpy(dtype=float)).any())
    if not finite:
        raise DipsimError(f"{where}: no metric has a finite value (every m.* column is empty, NaN or infinite)")
    return df


def read_point_files(out: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((out / "points").glob("*.json")):
        try:
            row = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # a damaged file: that point reruns
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            rows.append(row)
    return rows


def read_output(exp: Experiment, out: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """The finished rows of ``out`` by point key, and whether the experiment changed since the
    folder's last run; nothing is written. A folder that is not a sweep's is refused."""
    meta_path = out / "sweep.json"
    changed = False
    try:
        used = out.exists() and any(out.iterdir())
    except OSError as e:
        raise DipsimError(f"--out {out}: cannot read the folder ({e.strerror or e})") from None
    if used:
        if not meta_path.exists():
            raise DipsimError(f"{out}: exists and is not a dipsim sweep folder (no sweep.json); choose another --out")
        for name, what in (("points", "finished points"), ("dense", "dense baselines")):   # a file: internal error
            if os.path.lexists(out / name) and not (out / name).is_dir():
                raise DipsimError(f"{out / name}: not a folder; a sweep keeps its {what} there (move it away, or "
                                  f"choose another --out)")
        try:
            changed = json.loads(meta_path.read_text()).get("experiment_digest") != exp.digest
        except (OSError, ValueError, AttributeError, RecursionError):
            changed = True
    wanted = {p.key for p in exp.points}
    done = {row["key"]: row for row in read_point_files(out) if row["key"] in wanted} if used else {}
    return done, changed


def start_output(exp: Experiment, out: Path) -> None:
    """Create or reopen ``out``: ``points/``, and what is run (``sweep.json``, ``experiment.yaml``)."""
    make_folder(out)
    (out / "points").mkdir(exist_ok=True)
    atomic_write(out / "sweep.json", json.dumps({"name": exp.name, "experiment": str(exp.path),
                                                 "experiment_digest": exp.digest, "sweep_version": SWEEP_VERSION,
                                                 "points": len(exp.points), "dropped": exp.dropped}, indent=1).encode())
    atomic_write(out / "experiment.yaml", yaml.safe_dump(
        {"name": exp.name, "source": str(exp.path), "raw": exp.raw,
         "points": [{"key": p.key, **p.params} for p in exp.points],
         "dropped": [{"key": k, "reason": r} for k, r in exp.dropped]}, sort_keys=False).encode())


def discard_output(out: Path, made: bool) -> None:
    """Empty a folder this run started (no point finished): what it wrote goes, and the folder too if
    the run ``made`` it."""
    import shutil

    for p in list(out.iterdir()) if out.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    if made:
        try:
            out.rmdir()
        except OSError:
            pass


def row_of(point: Point, metrics: dict[str, Any]) -> dict[str, Any]:
    """A results row: the point's key, every parameter as ``p.<name>`` and the metrics; a keep schedule
    with all its parameters as checked (defaults and the greedy's calibration digest filled in)."""
    row: dict[str, Any] = {"key": point.key}
    params = dict(point.params)
    for k in schedules.KEEPS:
        checked = getattr(point.config.replay, k, None)
        if k in params and isinstance(checked, dict):
            params[k] = checked
    for k, v in flatten(params).items():
        row[f"p.{k}"] = v if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True)
    row.update(metrics)
    return row


def save_point(out: Path, point: Point, row: dict[str, Any]) -> None:
    atomic_write(out / "points" / f"{point.hash}.json", json.dumps(row, default=json_default).encode())
