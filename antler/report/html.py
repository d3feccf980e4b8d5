"""HTML pages of the reports: one self-contained page per chart, with the flow table.

Pages work offline: plotly.js is inlined in each page (no CDN, no MathJax),
so a result folder copied to a laptop on a plane still draws.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.id { color: #555; } a { color: #0645ad; }
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
    "error": "error",
}
"""TABLE_COLUMNS are the flow table's columns and their headings."""


def flow_table(flows: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """Flow_table renders per-flow metrics as an HTML table, leaving out columns no flow has."""
    if flows.empty:
        return "<p>No flows.</p>"
    df = flows[[c for c in TABLE_COLUMNS if c in flows.columns]].copy()
    if labels:
        df["flow"] = df["flow"].map(lambda f: labels.get(f, f))
    keep = [c for c in df.columns if not (df[c].isna().all() or (df[c].astype(str) == "").all())]
    df = df[keep]
    head = "".join(f"<th>{html.escape(TABLE_COLUMNS[c])}</th>" for c in keep)
    rows = []
    for rec in df.itertuples(index=False):
        cells = "".join(f"<td>{_cell(v)}</td>" for v in rec)
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


def page(title: str, body: str, subtitle: str = "") -> str:
    """Page returns a complete HTML document."""
    sub = f'<p class="id">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>\n"
    )


def figure_div(fig: Any, include_plotlyjs: bool = True) -> str:
    """Figure_div returns a plotly figure as an HTML fragment with plotly.js inlined."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=include_plotlyjs,
            include_mathjax=False,
            config={"displaylogo": False, "responsive": True},
        )
    )
