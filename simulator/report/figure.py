"""The explorer: accuracy against speed as a plotly figure, one trace per masking method, with
plotly's own widgets for the controls -- a dropdown per facet (device, model, method, cache) and a
slider for the accuracy budget -- and two traces the page's glue script fills: the Pareto front of
the points within the budget and the fastest of them (``explorer.js``; the widgets' steps do
nothing themselves, ``method: skip``, the script listens to their events).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..plots import label
from ..plots.base import spans_decades
from .data import Axes, fmt, meaning, number, unit

SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon", "star-triangle-up", "hexagon")
#: trace names of the highlight (the glue script finds them by these)
FRONT, BEST = "Pareto front within budget", "fastest within budget"


def axis_title(col: str, higher: bool) -> str:
    u = unit(col)
    text = label(col)
    if u and u not in text and u not in ("fraction", "text", "bool"):
        text += f" ({u})"
    return f"{text} – {'higher' if higher else 'lower'} is better"


def hover_text(row: dict[str, Any], axes: Axes, loss: float) -> str:
    """The configuration and every metric with its unit, for the point's hover label (a few items per
    line, so that the label fits beside a point anywhere in the plot)."""
    key = str(row.get("key") or "").split("#")[0]
    conf = [f"{c[2:]}={fmt(v)}" for c, v in row.items() if c.startswith("p.") and c != "p.trace" and _shown(v)]
    lines = [f"<b>{key or 'point'}</b>"] + _rows(conf, 5, ", ")
    if row.get("p.trace") is not None:
        lines.append(f"trace={str(row['p.trace'])[:90]}")
    head = [f"{axes.speed[2:]} {fmt(row.get(axes.speed), unit(axes.speed))}"]
    if axes.accuracy is not None:
        extra = ""
        if axes.dense is not None and number(loss) is not None:
            worse = loss >= 0
            extra = f" ({100 * abs(loss):.3g}% {'worse' if worse else 'better'} than dense)"
        head.append(f"{axes.accuracy[2:]} {fmt(row.get(axes.accuracy), unit(axes.accuracy))}{extra}")
    lines.append("<b>" + " · ".join(head) + "</b>")
    whole = [f"{c[2:]} {fmt(v, unit(c))}" for c, v in row.items()
             if c.startswith("m.") and "." not in c[2:] and c not in (axes.speed, axes.accuracy) and _shown(v)]
    lines += _rows(whole, 3, " · ")
    groups: dict[str, list[str]] = {}
    for c, v in row.items():
        if c.startswith("m.") and "." in c[2:] and _shown(v):
            g, name = c[2:].split(".", 1)
            groups.setdefault(g, []).append(f"{name} {fmt(v, unit(c))}")
    for g, items in groups.items():
        lines += [f"<i>{g}</i>: {r}" if i == 0 else f"   {r}" for i, r in enumerate(_rows(items, 4, " · "))]
    return "<br>".join(lines)


def _rows(items: list[str], n: int, sep: str) -> list[str]:
    return [sep.join(items[i:i + n]) for i in range(0, len(items), n)]


def _shown(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""


def details(row: dict[str, Any]) -> list[list[str]]:
    """``[column, value with its unit]`` of every parameter and metric of a point (the details panel)."""
    return [[c, fmt(v, unit(c) if c.startswith("m.") else "")] for c, v in row.items()
            if _shown(v) and (c.startswith(("p.", "m.")) or c == "key")]


def meanings(cols) -> dict[str, str]:
    return {c: meaning(c) for c in cols if c.startswith("m.") and meaning(c)}


def figure(points: list[dict[str, Any]], axes: Axes, methods: list[str], devices: list[str],
           menus: list[tuple[str, list[str]]], budgets: list[str], start: int):
    """The plotly figure of the explorer (its data: ``points`` from ``page.points``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name in methods:
        mine = [p for p in points if p["f"]["method"] == name]
        tr = dict(x=[p["x"] for p in mine], y=[p["y"] for p in mine], mode="markers", name=name,
                  hovertext=[p["hover"] for p in mine], hoverinfo="text", customdata=[p["i"] for p in mine],
                  marker=dict(size=10, line=dict(width=0.6, color="#333"),
                              symbol=[SYMBOLS[devices.index(p["f"]["device"]) % len(SYMBOLS)] for p in mine]))
        for ax in ("x", "y"):
            if any(p.get(f"{ax}lo") is not None for p in mine):
                tr[f"error_{ax}"] = dict(type="data", symmetric=False, thickness=1,
                                         array=[_span(p, ax, "hi") for p in mine],
                                         arrayminus=[_span(p, ax, "lo") for p in mine])
        fig.add_trace(go.Scatter(**tr))
    fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=FRONT, hoverinfo="skip",
                             line=dict(color="#111", width=1.5, dash="dot"),
                             marker=dict(size=16, symbol="circle-open", color="#111", line=dict(width=1.5))))
    fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name=BEST, hoverinfo="skip",
                             marker=dict(size=24, symbol="star", color="gold", line=dict(width=1.5, color="#000"))))
    xs = [p["x"] for p in points if p["x"] is not None]
    ys = [p["y"] for p in points if p["y"] is not None]
    fig.update_layout(
        height=800, margin=dict(l=70, r=30, t=110 if menus else 40, b=150 if len(budgets) > 1 else 60),
        hovermode="closest", hoverlabel=dict(align="left", font=dict(size=10), bgcolor="white"),
        legend=dict(title="method (marker shape: device)"), template="plotly_white",
        xaxis=dict(title=axis_title(axes.speed, True), type="log" if spans_decades(np.array(xs)) else "linear"),
        yaxis=dict(title=(axis_title(axes.accuracy, axes.higher) + ("" if axes.measured else " (no accuracy in "
                                                                                       "this table)"))
                   if axes.accuracy else "no accuracy in this table",
                   type="log" if axes.accuracy and spans_decades(np.array(ys)) else "linear"),
        updatemenus=[dict(name=facet, type="dropdown", direction="down", showactive=True, active=0,
                          x=i * 0.25, xanchor="left", y=1.16, yanchor="bottom",
                          buttons=[dict(label=f"every {facet}", method="skip", args=[None])]
                          + [dict(label=f"{facet}: {v}", method="skip", args=[None]) for v in values])
                     for i, (facet, values) in enumerate(menus)],
        sliders=[dict(name="budget", active=start, y=-0.12, yanchor="top", x=0, len=1.0, pad=dict(t=40),
                      currentvalue=dict(prefix=f"accuracy budget ({_budget_what(axes)}): ", font=dict(size=13)),
                      steps=[dict(label=b, method="skip", args=[None]) for b in budgets])]
        if len(budgets) > 1 else [])
    return fig


def _budget_what(axes: Axes) -> str:
    if axes.dense is None:
        return axes.accuracy.removeprefix("m.")
    return f"{axes.accuracy.removeprefix('m.')} {'below' if axes.higher else 'above'} the dense model's"


def _span(p: dict[str, Any], ax: str, side: str) -> float:
    v, b = p[ax], p.get(f"{ax}{side}")
    return 0.0 if v is None or b is None else abs(b - v)
