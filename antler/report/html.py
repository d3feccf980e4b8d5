"""HTML pages of the reports: a page per chart with the flow table, and the sortable tables of the index.

Pages work offline: they load the result folder's own copy of plotly.js by
relative path (:mod:`antler.report.assets`; no CDN, no MathJax), so a result
folder copied to a laptop on a plane still draws.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.id { color: #555; } a { color: #0645ad; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
tr.not-ok td { background: #fff4f2; } .status-failed, .status-interrupted, .status-running { color: #b3261e; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1em; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; } .card { width: 340px; font-size: 0.9em; }
.banner { padding: 0.5em 0.8em; border-left: 4px solid #b3261e; background: #fff4f2; }
.banner.ok { border-color: #2e7d32; background: #f1f8f1; }
.card img { width: 100%; border: 1px solid #ddd; } .card .none { color: #777; }
.note { color: #555; font-size: 0.9em; }
table.flows { font-size: 0.85em; max-width: 100%; } table.flows th { vertical-align: bottom; overflow-wrap: anywhere; }
table.flows td.text { text-align: left; min-width: 8em; max-width: 24em; overflow-wrap: anywhere; }
table.flows th, table.flows td { padding: 0.25em 0.4em; }
"""

_AXIS = {
    "gridcolor": "#EBF0F8",
    "linecolor": "#EBF0F8",
    "zerolinecolor": "#EBF0F8",
    "zerolinewidth": 2,
    "ticks": "",
    "automargin": True,
    "title": {"standoff": 15},
}
TEMPLATE: dict[str, Any] = {
    "layout": {
        "colorway": [
            "#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A",
            "#19d3f3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
        ],
        "font": {"color": "#2a3f5f"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "hoverlabel": {"align": "left"},
        "title": {"x": 0.05},
        "xaxis": _AXIS,
        "yaxis": _AXIS,
    }
}  # fmt: skip
"""TEMPLATE is the look of plotly's "plotly_white" for the charts' 2-D axes.

The named template also carries colour scales, 3-D scenes and maps: building
it costs a tenth of a second per report, spent on nothing these charts draw.
A chart's ``options`` may still name any template (``template: plotly_dark``).
"""

TABLE_COLUMNS = {
    "flow": "flow",
    "kind": "kind",
    "status": "status",
    "cca": "CCA",
    "direction": "dir",
    "bytes": "bytes",
    "goodput_mbps": "goodput (Mbit/s)",
    "fct_s": "FCT (s)",
    "rtt_ms_median": "RTT median (ms)",
    "rtt_ms_p99": "RTT p99 (ms)",
    "owd_ms_median": "OWD median (ms)",
    "owd_ms_p99": "OWD p99 (ms)",
    "sent": "sent",
    "lost": "lost",
    "loss_pct": "loss (%)",
    "lost_up": "lost up",
    "loss_up_pct": "loss up (%)",
    "lost_down": "lost down",
    "loss_down_pct": "loss down (%)",
    "duplicates": "dup",
    "late": "late",
    "early": "early",
    "retrans": "retrans",
    "qdelay_ms_median": "queue delay median (ms)",
    "qdelay_ms_p99": "queue delay p99 (ms)",
    "drops": "drops",
    "marks": "marks",
    "ecn": "ECN",
    "ce_pct": "CE (%)",
    "ce_up": "CE up",
    "ce_down": "CE down",
    "error": "error",
}
"""TABLE_COLUMNS are the flow table's columns and their headings."""


_TEXT_COLUMNS = {"error"}


def flow_table(flows: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """Render per-flow metrics as an HTML table, leaving out columns no flow has."""
    if flows.empty:
        return "<p>No flows.</p>"
    df = flows[[c for c in TABLE_COLUMNS if c in flows.columns]].copy()
    if labels:
        df["flow"] = df["flow"].map(lambda f: labels.get(f, f))
    keep = [c for c in df.columns if not (df[c].isna().all() or (df[c].astype(str) == "").all())]
    df = df[keep]
    head = "".join(f"<th>{html.escape(TABLE_COLUMNS[c])}</th>" for c in keep)
    rows = []
    # Free text (an error message) wraps in its own cell, so a 1400 px page
    # shows every column without a scrollbar (issue 30).
    opens = ['<td class="text">' if c in _TEXT_COLUMNS else "<td>" for c in keep]
    for rec in df.itertuples(index=False):
        cells = "".join(f"{o}{_cell(v)}</td>" for o, v in zip(opens, rec, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="flows"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if pd.isna(v):
            return ""
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    return html.escape(str(v))


def page(title: str, body: str, subtitle: str = "", head: str = "", banner: str = "") -> str:
    """Return a complete HTML document; ``head`` goes into its <head> (the plotly.js script tag).

    ``banner`` is an HTML fragment shown under the title (a test's health: see health_banner).
    """
    sub = f'<p class="id">{html.escape(subtitle)}</p>' if subtitle else ""
    sub += banner
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{head}<style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>\n"
    )


def health_banner(health: Mapping[str, Any] | None) -> str:
    """Return a test page's health banner from meta.json ``health`` ("" when the test has none).

    A suspect test gets a red banner with each reason; a healthy one a green line with its figures.
    """
    if not health:
        return ""
    if health.get("status") == "ok":
        return f'<p class="banner ok">{html.escape(str(health.get("line", "health ok")))}</p>'
    reasons = "".join(f"<li>{html.escape(str(r.get('text', '')))}</li>" for r in health.get("reasons", []))
    return (
        '<div class="banner suspect"><b>Suspect run: the testbed, not only the path, may be in these results.</b>'
        f"<ul>{reasons}</ul>What each check means and what to do: the README, Trusting the testbed.</div>"
    )


def figure_div(fig: Any) -> str:
    """Return a plotly figure as an HTML fragment; the page loads plotly.js itself (see page's head)."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            config={"displaylogo": False, "responsive": True},
        )
    )


SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  function key(row, col) {
    var cell = row.cells[col];
    var v = cell.getAttribute("data-v");
    return v !== null ? parseFloat(v) : cell.textContent.trim();
  }
  function empty(k) { return k === "" || (typeof k === "number" && isNaN(k)); }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, col), y = key(b, col);
        if (empty(x) || empty(y)) { return empty(x) - empty(y); }  /* blanks last, either way */
        var c = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y), undefined, {numeric: true});
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
"""SORT_JS makes each ``table.sortable`` sort by a column when its heading is clicked (again: the other way).

A cell's ``data-v`` is its number (blank for none); other cells sort as text
with numbers in it compared as numbers, so 10ms < 40ms < 100ms. Blank cells
stay last in both directions; rows that compare equal keep their order.
"""


def sortable_table(columns: list[str], rows: list[list[Any]], row_classes: list[str] | None = None) -> str:
    """Render rows under the headings columns as a table SORT_JS sorts.

    A float cell is shown as the flow table shows it and sorts by its value
    (NaN: blank, last); a :class:`SortsAs` cell is shown as its text and
    sorts by its value; other cells sort as text. HTML in a cell is escaped,
    except in a :class:`Markup` cell.
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and row_classes[i] else ""
        cells = []
        for v in row:
            if isinstance(v, float):
                data = "" if pd.isna(v) else repr(v)
                cells.append(f'<td data-v="{data}">{_cell(v)}</td>')
            elif isinstance(v, SortsAs):
                data = "" if v.value is None else repr(v.value)
                cells.append(f'<td data-v="{data}">{html.escape(v.text)}</td>')
            elif isinstance(v, Markup):
                cells.append(f"<td>{v}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append(f'<tr class="{cls}">' if cls else "<tr>")
        body.append("".join(cells) + "</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


@dataclass(frozen=True)
class SortsAs:
    """A table cell shown as ``text`` that sorts by ``value`` (an ID value: ``1s`` after ``500ms``); None sorts last."""

    text: str
    value: float | None


class Markup(str):
    """Text that is HTML already (a link), put into a table cell as it is."""
