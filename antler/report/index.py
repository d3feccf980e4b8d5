"""The comparison page: ``index.html`` of a result folder, comparing its tests.

The page has, in order:

- for a sweep, a chart per compared flow metric (``index.compare``) against
  the swept key, one line per flow and value of the other varying keys;
  with repetitions (ID key ``rep``) instead their means with interval bars,
  Jain's index, the CCA shares, an RTT CDF and box plots
  (:mod:`antler.report.repeated`);
- a table of every test and flow (the ID keys, the flow's goodput, FCT, RTT
  median and p99, loss and retransmits, the test's status and first error),
  sorted by a column when its heading is clicked (a few lines of inline
  script, no network);
- each test's time series image, linking to its page, with the charts and
  files it has.

A test that failed, was interrupted or has no flows is in the table and among
the images as such, never left out; in the charts its points are crosses.
One test works too (the table and its image). Tests an incremental run linked
from an older folder are read like the others. What the page shows of each
test is read by :mod:`antler.report.summary`; this module draws the page.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import plotly.graph_objects as go

from antler.report.assets import PLOTLY_JS, link_referenced, plotly_js_name, script_tag, write_plotly_js
from antler.report.calibration import calibration_html
from antler.report.html import SORT_JS, TABLE_COLUMNS, TEMPLATE, Markup, SortsAs, figure_div, page, sortable_table
from antler.report.provenance import provenance_html
from antler.report.repeated import has_repetitions, repeated_figures, repeated_table
from antler.report.spec import IndexSpec
from antler.report.summary import TestSummary, group_key, sort_key, summarize, varying_keys, x_key
from antler.results.ids import id_magnitude
from antler.results.tables import Results, load

SUMMARY_METRICS = ("goodput_mbps", "fct_s", "rtt_ms_median", "rtt_ms_p99", "loss_pct", "retrans")
"""SUMMARY_METRICS are the flows.parquet columns of the page's table, after the ID keys and the flow."""


def compare_figures(
    summaries: list[TestSummary], spec: IndexSpec, keys: list[str]
) -> tuple[list[go.Figure], list[str]]:
    """Chart each of ``spec.compare`` against the swept key; it returns the figures and notes.

    No figure for a single test or nothing swept; a metric no matched flow
    has gets a note instead of an empty chart.
    """
    x = x_key(keys, spec)
    if not x or len(summaries) < 2:
        return [], []
    figs, notes = [], []
    for metric in spec.compare:
        fig = compare_figure(summaries, spec, keys, metric)
        if fig is None:
            notes.append(f"No chart of {metric}: no flow matching {spec.flow!r} has it.")
        else:
            figs.append(fig)
    return figs, notes


def compare_figure(summaries: list[TestSummary], spec: IndexSpec, keys: list[str], metric: str) -> go.Figure | None:
    """Chart one flow metric against the swept key x, one line per flow and value of the other keys.

    The x key is :func:`x_key`'s. A point of a test that did not pass is a
    cross, its status in the hover text. None when no flow has the metric.
    """
    x = x_key(keys, spec)
    others = [k for k in keys if k != x]
    pattern = re.compile(spec.flow)
    rows = []
    for s in summaries:
        if s.flows is None or metric not in s.flows.columns:
            continue
        flows = s.flows[s.flows["flow"].map(lambda f: pattern.search(f) is not None) & s.flows[metric].notna()]
        test_id = s.test.id
        for flow, value in zip(flows["flow"], flows[metric], strict=True):
            rows.append(
                {
                    "series": " ".join([str(flow), *(f"{k}={test_id.get(k, '')}" for k in others)]),
                    "x": test_id.get(x, ""),
                    "y": float(value),
                    "status": s.status,
                    "test": s.test.id_text,
                }
            )
    if not rows:
        return None
    df = pd.DataFrame(rows)
    order = sorted(df["x"].unique(), key=sort_key)
    fig = go.Figure()
    for name, g in df.groupby("series", sort=True):
        g = g.assign(rank=g["x"].map(order.index)).sort_values("rank")
        fig.add_trace(
            go.Scatter(
                x=list(g["x"]),
                y=g["y"].to_numpy(),
                name=str(name),
                mode="lines+markers",
                marker={"symbol": ["circle" if st == "ok" else "x" for st in g["status"]], "size": 8},
                text=[f"{t} ({st})" for t, st in zip(g["test"], g["status"], strict=True)],
                hovertemplate="%{text}<br>%{y}<extra>%{fullData.name}</extra>",
            )
        )
    heading = TABLE_COLUMNS.get(metric, metric)
    fig.update_layout(
        title={"text": f"{metric} vs {x}"},
        template=TEMPLATE,
        height=450,
        xaxis={"title": {"text": x}, "type": "category", "categoryorder": "array", "categoryarray": order},
        yaxis={"title": {"text": heading}, "rangemode": "tozero"},
        # Named even when there is one line: the legend says which flow it is.
        showlegend=True,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def summary_table(summaries: list[TestSummary], id_keys: list[str], result_dir: Path) -> str:
    """Return the sortable table of every test and flow (a test without flows is one row)."""
    columns = [*id_keys, "flow", *(TABLE_COLUMNS[m] for m in SUMMARY_METRICS), "status", "health", "first error"]
    rows: list[list[Any]] = []
    classes = []
    nan = float("nan")
    # ID values that are all numbers or quantities sort by magnitude (1s after 500ms), not as text (issue 30).
    by_value = {
        k for k in id_keys if all(id_magnitude(v) is not None for s in summaries if (v := s.test.id.get(k)) is not None)
    }
    for s in summaries:
        ids: list[Any] = [
            SortsAs(v, id_magnitude(v)) if k in by_value else v for k in id_keys for v in [s.test.id.get(k, "")]
        ]
        tail = [Markup(_status(s.status)), _health(s.test.meta.get("health")), s.first_error or s.problem]
        link = next((c.page for c in s.charts if c.page is not None), None)
        flows = s.flows if s.flows is not None else pd.DataFrame()
        if flows.empty:
            rows.append([*ids, "", *([nan] * len(SUMMARY_METRICS)), *tail])
            classes.append("" if s.ok else "not-ok")
            continue
        for rec in flows.to_dict("records"):
            flow = str(rec.get("flow", ""))
            cell: Any = Markup(f'<a href="{_href(link, result_dir)}">{html.escape(flow)}</a>') if link else flow
            metrics = [_float(rec.get(m)) for m in SUMMARY_METRICS]
            rows.append([*ids, cell, *metrics, *tail])
            classes.append("" if s.ok else "not-ok")
    return sortable_table(columns, rows, classes)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _status(status: str) -> str:
    return f'<span class="status-{html.escape(status)}">{html.escape(status)}</span>'


def _health(health: Any) -> Any:
    """Return a test's health cell: ``ok``, ``suspect`` with its reasons on hover, or "" without a verdict."""
    if not isinstance(health, dict) or "status" not in health:
        return ""
    why = "; ".join(str(r.get("text", "")) for r in health.get("reasons", []))
    css = "status-ok" if health["status"] == "ok" else "status-failed"
    return Markup(f'<span class="{css}" title="{html.escape(why)}">{html.escape(str(health["status"]))}</span>')


def _href(path: Path, result_dir: Path) -> str:
    return quote(path.relative_to(result_dir).as_posix())


def card_html(s: TestSummary, result_dir: Path) -> str:
    """Return a test's image (its time series, linking to the page), ID, status, swept values, chart and files."""
    series = next((c for c in s.charts if c.image is not None and c.name != "fct"), None)
    series = series or next((c for c in s.charts if c.image is not None), None)
    if series is not None and series.image is not None:
        img = (
            f'<img src="{_href(series.image, result_dir)}" loading="lazy" '
            f'alt="{html.escape(series.name)} of {html.escape(s.test.id_text)}">'
        )
        target = series.page or series.image
        picture = f'<a href="{_href(target, result_dir)}">{img}</a>'
    else:
        picture = f'<p class="none">No chart: {html.escape(_why_no_chart(s))}</p>'
    charts = " · ".join(
        f'<a href="{_href(c.page or c.image, result_dir)}">{html.escape(c.name)}</a>'  # type: ignore[arg-type]
        for c in s.charts
    )
    files = []
    for f in sorted(p for p in s.test.path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if f.parent == result_dir and (PLOTLY_JS.fullmatch(f.name) or f.name == "index.html"):
            continue  # the folder's own files, when the test is the whole folder
        files.append(f'<a href="{_href(f, result_dir)}">{html.escape(f.relative_to(s.test.path).as_posix())}</a>')
    error = f'<div class="status-failed">{html.escape(s.first_error)}</div>' if s.first_error else ""
    # The values a sweep applied, as given (the ID holds them made safe for folder names), where meta has them.
    swept = s.test.meta.get("swept") or {}
    applied = " · ".join(f"{html.escape(str(k))} = {html.escape(str(v))}" for k, v in swept.items())
    return (
        f'<div class="card">{picture}<div><b>{html.escape(s.test.id_text)}</b> ({_status(s.status)})</div>{error}'
        + (f"<div class='swept'>{applied}</div>" if applied else "")
        + f"<div>charts: {charts or 'none'}</div>"
        f"<details><summary>files ({len(files)})</summary>{' · '.join(files)}</details></div>"
    )


def _why_no_chart(s: TestSummary) -> str:
    if s.problem:
        return s.problem
    if s.status == "interrupted":
        return "the test was interrupted before its reports"
    if s.flows is not None and s.flows.empty:
        return "the test has no flows"
    return "its reports made none"


def comparison_page(results: Results, spec: IndexSpec, notes: list[str] | None = None) -> tuple[str, list[go.Figure]]:
    """Return the comparison page of results (see the module) and its charts.

    ``notes`` are sentences shown at the top (a plotly.js a linked page needs
    and that could not be found).
    """
    result_dir = results.path
    keys = varying_keys(results)
    group_by = group_key(keys, spec)
    id_keys: list[str] = []
    for test in results.values():
        id_keys += [k for k in test.id if k not in id_keys]
    summaries = [summarize(test, key) for key, test in results.items()]
    # Tests in the order of their ID values, numbers as numbers (10ms before 100ms).
    summaries.sort(key=lambda s: [sort_key(s.test.id.get(k, "")) for k in [group_by, *id_keys] if k])
    if has_repetitions(keys):
        figs, chart_notes = repeated_figures(results, spec, keys)
    else:
        figs, chart_notes = compare_figures(summaries, spec, keys)
    parts = [f"<p class='note'>{html.escape(n)}</p>" for n in (notes or [])]
    parts.append(calibration_html(result_dir))  # the rig checked before the tests (antler.report.calibration)
    provenances = {provenance_html(s.test.meta.get("provenance")) for s in summaries} - {""}
    parts += sorted(provenances)
    if figs:
        parts.append('<div class="charts">' + "".join(f"<div>{figure_div(f)}</div>" for f in figs) + "</div>")
        if any(not s.ok for s in summaries):
            parts.append("<p class='note'>A cross marks a test that did not pass (its status is in the table).</p>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in chart_notes]
    if has_repetitions(keys):
        parts.append(repeated_table(results, spec, keys))
    parts.append("<h2>Tests and flows</h2>")
    parts.append("<p class='note'>Click a heading to sort by it.</p>")
    parts.append(summary_table(summaries, id_keys, result_dir))
    parts.append("<h2>Time series</h2>")
    groups: dict[str, list[TestSummary]] = {}
    for s in summaries:
        groups.setdefault(s.test.id.get(group_by, "") if group_by else "", []).append(s)
    for value, members in groups.items():
        if group_by:
            parts.append(f"<h3>{html.escape(group_by)} = {html.escape(value)}</h3>")
        parts.append('<div class="cards">' + "".join(card_html(s, result_dir) for s in members) + "</div>")
    parts.append(f"<script>{SORT_JS}</script>")
    # write_index puts the script there: building the page writes nothing.
    head = script_tag(result_dir, result_dir / plotly_js_name()) if figs else ""
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s.status] = counts.get(s.status, 0) + 1
    n = len(summaries)
    subtitle = f"{n} test{'s' if n != 1 else ''}: " + ", ".join(f"{c} {st}" for st, c in sorted(counts.items()))
    return page("Results", "".join(parts), subtitle, head), figs


def index_html(result_dir: Path, spec: IndexSpec) -> tuple[str, list[go.Figure]]:
    """Return the comparison page of a result folder and its charts (see comparison_page)."""
    return comparison_page(load(result_dir), spec)


def write_index(result_dir: Path, spec: IndexSpec, name: str = "index.html") -> Path:
    """Write the result folder's comparison page, and the plotly.js its pages load.

    Pages of tests linked from an older result folder may load another
    plotly.js version: it is linked in from there (see
    antler.report.assets.link_referenced); one that cannot be found is a
    note on the page. Raises FileExistsError if the page exists (nothing is
    overwritten).
    """
    results = load(result_dir)
    pages = [p for test in results.values() for p in sorted(test.path.glob("*.html"))]
    notes = link_referenced(result_dir, pages)
    text, figs = comparison_page(results, spec, notes)
    if figs:
        write_plotly_js(result_dir)
    path = result_dir / name
    with open(path, "x") as f:
        f.write(text)
    return path
