"""``dipsim report``: one self-contained HTML file from a results table -- a sweep's
``results.parquet``, a search's trials, any table of ``p.<param>`` / ``m.<metric>`` columns.

    from simulator.report import write_report
    write_report(df, "report.html", provenance=..., title="gamma")

It holds the accuracy-against-speed explorer (plotly, embedded: the file works offline; hover for a
point's configuration and every metric with its unit, dropdowns to filter by device, model, method
and cache, a slider for the accuracy budget that marks the fastest point within it and their Pareto
front), the tables (the fastest configuration within each budget, every point) and the provenance
(``provenance.json`` beside the table: command, dipsim version, experiment, plugins, the digests of
traces, models and hardware profiles). ``data`` chooses axes and budgets, ``figure`` builds the
plotly figure, ``page`` the HTML; ``explorer.js`` is the little glue between plotly's widgets and
the figure's traces.
"""
from .data import Axes, budget_steps, choose_axes
from .page import build_html, table_source, write_report

__all__ = ["Axes", "budget_steps", "build_html", "choose_axes", "table_source", "write_report"]
