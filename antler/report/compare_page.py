"""The page of ``antler-ray compare --html``: the comparison table of two result folders (antler.results.compare)."""

from __future__ import annotations

import html

import pandas as pd

from antler.report.html import SORT_JS, Markup, page, sortable_table
from antler.results.compare import value_text

HEADINGS = ["test", "flow", "metric", "old", "new", "change", "verdict"]
"""HEADINGS are the page's (and the command's) columns."""


def comparison_rows(table: pd.DataFrame) -> list[list[str]]:
    """Return the rows of a comparison (antler.results.compare.COLUMNS) as text, in HEADINGS' order."""
    rows = []
    for r in table.to_dict("records"):
        change = "-" if pd.isna(r["change"]) else f"{r['change']:+.4g}"
        rows.append(
            [
                str(r["test"]),
                str(r["flow"]) or "(summary)",
                str(r["metric"]),
                value_text(int(r["old_n"]), r["old_mean"], r["old_low"], r["old_high"]),
                value_text(int(r["new_n"]), r["new_mean"], r["new_low"], r["new_high"]),
                change,
                str(r["verdict"]),
            ]
        )
    return rows


def compare_html(table: pd.DataFrame, old: str, new: str) -> str:
    """Return the comparison as a page: the counts of each verdict, then the sortable table."""
    rows = comparison_rows(table)
    cells = [
        [*r[:6], Markup(f'<span class="verdict-{r[6].replace(" ", "-")}">{html.escape(r[6])}</span>')] for r in rows
    ]
    classes = ["not-ok" if r[6] == "worse" else "" for r in rows]
    counts = table["verdict"].value_counts().to_dict() if len(table) else {}
    summary = ", ".join(f"{c} {v}" for v, c in sorted(counts.items()))
    style = (
        "<style>.verdict-worse{color:#b00;font-weight:bold}.verdict-better{color:#070;font-weight:bold}"
        ".verdict-changed{color:#a60}</style>"
    )
    body = (
        f"<p>old: {html.escape(old)}<br>new: {html.escape(new)}</p>"
        f"<p>{html.escape(summary or 'nothing to compare')}</p>"
        "<p class='note'>Values are means over the repetitions with their 95 % bootstrap interval; "
        "a change is beyond noise when the intervals do not overlap (one run: more than the tolerance).</p>"
        + sortable_table(HEADINGS, cells, classes)  # type: ignore[arg-type]
        + f"<script>{SORT_JS}</script>"
    )
    return page("Comparison", body, f"{len(rows)} metrics", style)
