"""The report page: one self-contained HTML file -- the explorer (plotly, its library embedded, so the
file works offline), the tables and the provenance -- written atomically."""
from __future__ import annotations

import datetime
import hashlib
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DipsimError
from common.io import atomic

from .data import Axes, budget_steps, choose_axes, facets, fmt, number, unit
from .figure import BEST, FRONT, details, figure, hover_text, meanings

GLUE = Path(__file__).with_name("explorer.js")
#: the budgets the static table reports (relative to dense), and how many the absolute ones get
TABLE_BUDGETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, math.inf)
HEADLINE = ("m.hit_rate", "m.flash_bytes_per_token", "m.speedup_vs_dense", "m.dram_footprint_bytes",
            "m.kl_to_dense", "m.top1_agreement")
CSS = """body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:16px 24px}h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 8px}
.sub{color:#666;margin:0 0 12px}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin:10px 0}
#details{font-size:12px}#details table{display:block;columns:3 300px;column-gap:24px}#details tr{display:flex;
break-inside:avoid}#details td{padding:1px 4px}#details td:first-child{flex:0 0 52%;color:#555;word-break:break-all}
table.t{border-collapse:collapse;font-size:12.5px;width:100%}table.t th,table.t td{border-bottom:1px solid #e5e5e5;
padding:3px 6px;text-align:left}table.t th{background:#f0f0f0;position:sticky;top:0}td.n{text-align:right;
font-variant-numeric:tabular-nums}.scroll{max-height:480px;overflow:auto}#best{font-size:13.5px}
dl.p{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}dl.p dt{color:#555}
dl.p dd{margin:0;word-break:break-all}code{font-size:12px}pre{font-size:12px;background:#f6f6f6;padding:8px;overflow:auto}"""


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def points(df, axes: Axes, loss: np.ndarray, traces: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per row for the page's script: position, error bounds, loss, facets, hover text."""
    rows = df.to_dict("records")
    out = []
    for i, (r, f) in enumerate(zip(rows, facets(rows, traces))):
        p = {"i": i, "key": str(r.get("key") or f"row {i}"), "x": number(r.get(axes.speed)),
             "y": number(r.get(axes.accuracy)) if axes.accuracy else 0.0, "loss": number(loss[i]), "f": f,
             "hover": hover_text(r, axes, loss[i])}
        for ax, col in (("x", axes.speed), ("y", axes.accuracy)):
            for side in ("lo", "hi"):
                c = f"{col}_{'low' if side == 'lo' else 'high'}" if col else None
                if c and c in r and number(r[c]) is not None:
                    p[f"{ax}{side}"] = number(r[c])
        out.append(p)
    return out


def _table(head: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if j in numeric else ''}>{esc(v)}</td>" for j, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="t"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def budget_table(df, axes: Axes, loss: np.ndarray, pts: list[dict[str, Any]]) -> str:
    """The fastest point within each of a few budgets, per device and model."""
    if not axes.measured:
        return "<p>No accuracy figures in this table: no budgets to compare.</p>"
    if axes.dense is not None:
        levels = list(TABLE_BUDGETS)
    else:
        fin = loss[np.isfinite(loss)]
        levels = sorted(set(np.quantile(fin, [0, 0.25, 0.5, 0.75]).round(6).tolist())) + [math.inf] if fin.size else [math.inf]
    groups = sorted({(p["f"]["device"], p["f"]["model"]) for p in pts})
    rows = []
    for b in levels:
        for dev, model in groups:
            ok = [p for p in pts if (p["f"]["device"], p["f"]["model"]) == (dev, model) and p["x"] is not None
                  and (b == math.inf or (p["loss"] is not None and p["loss"] <= b + 1e-12))]
            best = max(ok, key=lambda p: (p["x"], p["y"] if axes.higher else -p["y"])) if ok else None
            r = df.iloc[best["i"]] if best else None
            rows.append([axes.budget_label(b), dev, model, best["key"].split("#")[0] if best else "none fits",
                         fmt(r[axes.speed], unit(axes.speed)) if best else "–",
                         fmt(r[axes.accuracy], unit(axes.accuracy)) if best else "–"])
    head = ["budget", "device", "model", "fastest configuration", axes.speed[2:], axes.accuracy[2:]]
    return _table(head, rows, {4, 5})


def points_table(df, axes: Axes, loss: np.ndarray) -> str:
    """Every point: the parameters that vary, speed, accuracy (and its loss) and headline metrics."""
    varying = [c for c in df.columns if c.startswith("p.") and df[c].astype(str).nunique() > 1]
    metrics = [c for c in (axes.speed, axes.accuracy, *HEADLINE) if c and c in df.columns]
    metrics = list(dict.fromkeys(metrics))
    order = np.argsort(-np.nan_to_num(df[axes.speed].to_numpy(float), nan=-np.inf), kind="stable")
    head = ["point", *[c[2:] for c in varying]] + [f"{c[2:]} ({unit(c)})" if unit(c) else c[2:] for c in metrics]
    if axes.dense is not None:
        head.append("accuracy loss vs dense")
    rows = []
    for i in order:
        r = df.iloc[i]
        row = [str(r.get("key", i)).split("#")[0], *[fmt(r[c]) for c in varying],
               *[fmt(r[c], unit(c)) for c in metrics]]
        if axes.dense is not None:
            row.append("–" if not np.isfinite(loss[i]) else f"{100 * loss[i]:+.3g}%")
        rows.append(row)
    return _table(head, rows, set(range(1 + len(varying), len(head))))


def _dl(d: dict[str, Any]) -> str:
    items = []
    for k, v in d.items():
        if isinstance(v, dict):
            val = _dl(v) if v else "–"
        elif isinstance(v, list):
            val = "<br>".join(_dl(x) if isinstance(x, dict) else esc(x) for x in v) or "–"
        else:
            val = f"<code>{esc(v)}</code>"
        items.append(f"<dt>{esc(k)}</dt><dd>{val}</dd>")
    return f'<dl class="p">{"".join(items)}</dl>'


def provenance_html(prov: dict[str, Any] | None, source: dict[str, Any]) -> str:
    parts = [f'<div class="card"><h3>this report</h3>{_dl(source)}</div>']
    if not prov:
        parts.append('<p>No <code>provenance.json</code> beside the table: only what the table itself holds is '
                     'known (a sweep writes one into its results folder).</p>')
        return "".join(parts)
    raw = prov.get("experiment", {}).get("yaml")
    shown = {k: v for k, v in prov.items() if k != "experiment"}
    exp = {k: v for k, v in prov.get("experiment", {}).items() if k != "yaml"}
    parts.append(f'<div class="card"><h3>run</h3>{_dl(shown)}</div>')
    if exp:
        parts.append(f'<div class="card"><h3>experiment</h3>{_dl(exp)}'
                     + (f"<details><summary>the experiment file</summary><pre>{esc(raw)}</pre></details>" if raw else "")
                     + "</div>")
    return "".join(parts)


def build_html(df, *, provenance: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
               title: str | None = None, speed: str | None = None, accuracy: str | None = None) -> str:
    """The report of a results table (``p.*`` / ``m.*`` columns) as one self-contained HTML page."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise DipsimError("the report needs plotly: pip install plotly (requirements.txt pins it)") from None
    if len(df) == 0:
        raise DipsimError("the table has no rows: nothing to report")
    axes = choose_axes(df, speed, accuracy)
    loss = axes.loss(df)
    traces = (provenance or {}).get("traces") or {}
    pts = points(df, axes, loss, traces)
    steps, start = budget_steps(axes, loss)
    menus = []
    for facet in ("device", "model", "method", "cache"):
        values = sorted({p["f"][facet] for p in pts})
        if len(values) > 1:
            menus.append((facet, values))
    methods = sorted({p["f"]["method"] for p in pts})
    devices = sorted({p["f"]["device"] for p in pts})
    fig = figure(pts, axes, methods, devices, menus, [axes.budget_label(b) for b in steps], start)
    data = {"points": [{k: v for k, v in p.items() if k != "hover"} for p in pts], "methods": methods,
            "menus": [[f, v] for f, v in menus], "budgets": [None if b == math.inf else b for b in steps],
            "budgetLabels": [axes.budget_label(b) for b in steps], "start": start, "front": FRONT, "best": BEST,
            "speed": axes.speed, "accuracy": axes.accuracy, "units": {axes.speed: unit(axes.speed)},
            "details": [details(r) for r in df.to_dict("records")], "meanings": meanings(df.columns),
            "hover": [p["hover"] for p in pts], "higher": axes.higher}
    if axes.accuracy:
        data["units"][axes.accuracy] = unit(axes.accuracy)
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id="explorer", default_width="100%",
                       config={"displaylogo": False, "responsive": True,
                               "toImageButtonOptions": {"format": "png", "filename": "dipsim-explorer"}},
                       post_script=GLUE.read_text())
    name = title or "results"
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>dipsim report: {esc(name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body><main>
<h1>dipsim report: {esc(name)}</h1>
<p class="sub">{len(df)} points; {esc(axes.accuracy[2:] if axes.accuracy else 'nothing')} against
{esc(axes.speed[2:])}. Hover a point for its configuration and every metric (click to keep them in the panel below);
the dropdowns filter by {esc(', '.join(f for f, _ in menus) or 'nothing (one value each)')}; the slider sets the
accuracy budget: the star is the fastest point within it, the dotted line the Pareto front of the points
within it. Works offline (plotly {esc(_plotly_version())} is embedded).</p>
<script type="application/json" id="dipsim-data">{_json(data)}</script>
<div class="card"><div id="best"></div>{plot}</div>
<div class="card" id="details"><b>details</b><p>Hover a point: its parameters and every metric appear here (click
it to keep them).</p></div>
<h2>Fastest configuration within each accuracy budget</h2>{budget_table(df, axes, loss, pts)}
<h2>Every point</h2>{points_table(df, axes, loss)}
<h2>Provenance</h2>{provenance_html(provenance, source or {})}
</main></body></html>"""


def _json(data: Any) -> str:
    """JSON safe inside a <script> element (no '</' can close it)."""
    return json.dumps(data, allow_nan=False, default=str).replace("</", "<\\/")


def _plotly_version() -> str:
    import plotly

    return plotly.__version__


def write_report(df, out: str | os.PathLike, **kw: Any) -> Path:
    """Write the report of ``df`` to ``out`` (atomically; ``kw``: see :func:`build_html`)."""
    out = Path(out)
    page = build_html(df, **kw)
    with atomic(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out


def table_source(path: Path) -> dict[str, Any]:
    """What the report says about the table it was built from."""
    from traces import __version__

    h = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"table": str(path), "table sha256": h or "–", "report written":
            datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "by dipsim": __version__}
