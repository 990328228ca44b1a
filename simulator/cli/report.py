"""``dipsim report``: one self-contained HTML file from a results table (``simulator.report``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import DipsimError

from .options import add_verb


def add_parser(sub) -> None:
    s = add_verb(sub, "report", run, "an interactive HTML report of a sweep's (or a search's) results, for a browser")
    s.add_argument("results", help="a sweep results folder, or a results table (.parquet: results.parquet, a "
                                    "search's trials.parquet)")
    s.add_argument("--out", metavar="FILE", help="the HTML file to write (default: report.html in the results "
                                                 "folder, or beside the table as <table>.html)")
    s.add_argument("--speed", metavar="METRIC", help="the explorer's x axis (default: the first of tokens_per_s, "
                                                     "analytic_tokens_per_s, hit_rate the table has)")
    s.add_argument("--accuracy", metavar="METRIC", help="the explorer's y axis and budget (default: perplexity, a "
                                                        "metric with a dense_ figure, kl_to_dense, top1_agreement)")
    s.add_argument("--title", help="the report's title (default: the sweep's name, else the folder's)")


def _table(res: Path):
    """The table, where it was read from, and the folder whose provenance.json and sweep.json apply."""
    import pandas as pd

    if res.is_dir():
        from ..sweep import load_results

        return load_results(res), res / "results.parquet", res
    if not res.exists():
        raise DipsimError(f"results not found: {res} (give a sweep's results folder or a .parquet table)")
    if res.suffix.lower() != ".parquet":
        raise DipsimError(f"{res}: not a results table; give a sweep's results folder or a .parquet file")
    try:
        return pd.read_parquet(res), res, res.parent
    except Exception as e:   # pyarrow raises several types for a damaged file
        raise DipsimError(f"{res}: not a readable parquet file ({type(e).__name__})") from None


def _read_json(p: Path) -> dict | None:
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run(a: argparse.Namespace) -> int:
    """Write one HTML file that works offline (plotly embedded): the accuracy-against-tokens/s explorer --
    hover a point for its configuration and every metric with its unit, filter by device, model, method and
    cache, move the accuracy budget to see the fastest point within it and their Pareto front -- the tables
    (the fastest configuration within each budget, every point) and the provenance (command, dipsim version,
    the digests of traces, models and hardware profiles, plugins). Every sweep writes one at its end; this
    verb writes it for any table of p.<param> / m.<metric> columns."""
    from common.io import check_file

    from ..report import table_source, write_report

    res = Path(a.results)
    default = res / "report.html" if res.is_dir() else res.with_suffix(".html")
    out = check_file(a.out or default, "--out", (".html", ".htm"))
    df, table, folder = _table(res)
    prov = _read_json(folder / "provenance.json")
    title = a.title or (_read_json(folder / "sweep.json") or {}).get("name") or folder.resolve().name
    write_report(df, out, provenance=prov, source=table_source(table), title=title, speed=a.speed,
                 accuracy=a.accuracy)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; open it in a browser, no network needed)")
    return 0
