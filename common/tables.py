"""Plain aligned text tables of dict rows (what every command prints)."""
from __future__ import annotations

import sys
from typing import Any


def format_table(rows: list[dict[str, Any]], floatfmt: str = "{:.4g}", missing: str = "",
                 empty: str = "(no rows)") -> str:
    """The rows as right-aligned columns under a header (columns in first-seen order); ``missing``
    stands for None."""
    if not rows:
        return empty
    cols = list(rows[0].keys())
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return missing if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (columns of the first row)."""
    cols = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]], file=None, floatfmt: str = "{:.4g}") -> None:
    print(format_table(rows, floatfmt), file=file or sys.stdout)
