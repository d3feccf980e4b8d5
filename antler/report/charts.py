"""Charts: goodput and delay against time, and flow completion time against length.

Each chart is built once as a plotly figure (the interactive, zoomable page)
and drawn again with matplotlib for static images (:mod:`antler.report.images`:
plotly's own image export needs a browser download, which this project's
machines cannot do). The figure functions return the plotly figure so tests
can check its series.

Charts draw what a screen can show: a time series longer than the spec's
``max_points`` (default 20,000 per flow; IMAGE_POINTS in a static image) is
drawn as the minimum and maximum of each of ``max_points / 2`` equal time
buckets (:mod:`antler.report.decimate`), so spikes stay; a shorter one is
drawn whole. The metrics (flow table, flows.parquet) come from
:mod:`antler.report.analyze` and use every sample.

A chart is drawn only when it has data: no time series without a goodput or
delay point, no delay axis without a packet flow (delay alone takes the left
axis), no FCT chart without a completed length-limited flow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from antler.report.analyze import Analysis
from antler.report.assets import script_tag, write_plotly_js
from antler.report.chartspec import FCTOptions as ChartsFCT, TimeSeriesOptions as ChartsTimeSeries
from antler.report.decimate import flow_points
from antler.report.html import TEMPLATE, figure_div, flow_table, page
from antler.report.images import IMAGE_SUFFIXES, matplotlib_fct, matplotlib_timeseries


def label(flow: str, labels: Mapping[str, str], cca: str = "") -> str:
    """Return a flow's display name: its label if the spec gives one, else the flow ID and its CCA (``tcp cubic``)."""
    if flow in labels:
        return labels[flow]
    return f"{flow} {cca}" if cca and cca != flow else flow


def interval_text(seconds: float) -> str:
    """Return an interval as a chart names it: ``100 ms``, ``1 s``."""
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def timeseries_figure(a: Analysis, spec: ChartsTimeSeries) -> go.Figure:
    """Return goodput per stream flow (left axis) and delay per packet flow (right axis).

    Goodput is drawn per ``a.goodput_interval_s`` (the axis title names it),
    counted as the sender's TCP_INFO saw it delivered where it sampled that
    (see :class:`Analysis`), the raw receiver samples beside it as a hidden
    trace per flow ("samples", shown by a click on its legend entry): after
    a loss the receiver reads what TCP held back at once, so those can lie
    far above the link rate, and the goodput axis is scaled to the binned
    series, not to them. The
    legend names each stream flow with its CCA (``tcp cubic``). An axis is
    there only for series it has: without goodput points the delay takes the
    left axis, without delay points there is no right axis, and without
    either the figure has no traces (nothing to draw).
    """
    fig = go.Figure(layout={"height": 600})
    cca = _ccas(a.flows)
    goodput = flow_points(a.goodput, "goodput_mbps", spec.max_points)
    for flow, t, y in goodput:
        # A short flow has a point or two: markers keep it visible.
        mode = "lines" if len(t) > 4 else "lines+markers"
        fig.add_trace(
            go.Scatter(
                x=t,
                y=y,
                name=label(flow, spec.flow_label, cca.get(flow, "")),
                mode=mode,
                line={"width": 1.5},
                yaxis="y",
                legendgroup=flow,
            )
        )
    for flow, t, y in flow_points(a.goodput_samples, "goodput_mbps", spec.max_points):
        fig.add_trace(
            go.Scatter(
                x=t,
                y=y,
                name=f"{label(flow, spec.flow_label, cca.get(flow, ''))} samples",
                mode="lines",
                line={"width": 0.8, "dash": "dot"},
                yaxis="y",
                visible="legendonly",
                legendgroup=flow,
            )
        )
    delay_name = "RTT" if spec.delay == "rtt" else "one-way delay"
    delay_axis = {"title": {"text": f"{'RTT' if spec.delay == 'rtt' else 'One-way delay'} (ms)"}, "rangemode": "tozero"}
    delay = flow_points(a.delay(spec.delay), "delay_ms", spec.max_points)
    for flow, t, y in delay:
        fig.add_trace(
            go.Scatter(
                x=t,
                y=y,
                name=f"{label(flow, spec.flow_label)} {delay_name}",
                mode="markers",
                marker={"size": 3},
                yaxis="y2" if goodput else "y",
            )
        )
    goodput_axis: dict[str, Any] = {
        "title": {"text": f"Goodput (Mbit/s per {interval_text(a.goodput_interval_s)})"},
        "rangemode": "tozero",
    }
    top = max((float(np.nanmax(y)) for _, _, y in goodput if len(y) and not np.isnan(y).all()), default=0.0)
    if top > 0:
        # Set by the series a reader compares: the hidden raw samples do not stretch it.
        goodput_axis["range"] = [0, top * 1.05]
    axes: dict[str, Any] = {"yaxis": goodput_axis}
    if delay and goodput:
        # Round ticks of its own (synced ticks give values like 7.56 ms).
        axes["yaxis2"] = {**delay_axis, "overlaying": "y", "side": "right", "showgrid": False, "tickmode": "auto"}
    elif delay:
        axes["yaxis"] = delay_axis
    if queue_panel(fig, a, spec):
        # The queue below, on the same time axis: goodput and delay keep the top.
        for name in ("yaxis", "yaxis2"):
            if name in axes:
                axes[name]["domain"] = [QUEUE_PANEL_TOP + 0.08, 1]
    note = clock_note(a, spec.delay)
    fig.update_layout(
        title={"text": f"{spec.title}<br><sup>{note}</sup>" if note else spec.title},
        template=TEMPLATE,
        xaxis={"title": {"text": "Time (s)"}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.15},
        hovermode="closest",
        **axes,
    )
    if spec.options:
        fig.update_layout(spec.options)
    return fig


QUEUE_PANEL_TOP = 0.3
"""QUEUE_PANEL_TOP is the top of the queue panel, as a fraction of the plot's height."""


def queue_panel(fig: go.Figure, a: Analysis, spec: ChartsTimeSeries) -> bool:
    """Add the bottleneck queue below the chart (axes y3, y4); return False when the test has no queue records.

    A userspace bottleneck's panel has each flow's median sojourn per
    interval (ms, lines); a kernel one's the queue's backlog (packets). The
    drops and CE marks per interval are bars on the right axis.
    """
    q = a.queue
    if q is None or q.empty:
        return False
    kernel = bool(q["flow"].eq("backlog").all())
    column, title = ("backlog_packets", "Backlog (packets)") if kernel else ("qdelay_ms", "Queue delay (ms)")
    for flow, rows in q.groupby("flow", sort=True):
        # "other" is the path's own traffic (the rig's warm-up ping): not a flow of the test.
        if rows[column].notna().any() and flow != "other":
            name = "backlog" if kernel else f"{label(str(flow), spec.flow_label)} queue delay"
            fig.add_trace(go.Scatter(x=rows["t_s"], y=rows[column], name=name, mode="lines", yaxis="y3"))
    for what in ("drops", "marks"):
        per_t = q.groupby("t_s")[what].sum(min_count=1)
        if per_t.fillna(0).gt(0).any():
            fig.add_trace(go.Bar(x=per_t.index, y=per_t.to_numpy(), name=what, yaxis="y4", opacity=0.5))
    fig.update_layout(
        yaxis3={"title": {"text": title}, "domain": [0, QUEUE_PANEL_TOP], "rangemode": "tozero", "anchor": "x"},
        yaxis4={
            "title": {"text": "Drops, marks"},
            "overlaying": "y3",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            "tickformat": ",d",
        },
        # The time axis at the bottom, under the queue; the panels above share it.
        xaxis={"anchor": "y3"},
        barmode="overlay",
        height=800,
    )
    return True


def _ccas(flows: pd.DataFrame) -> dict[str, str]:
    """Return each stream flow's CCA (flows without one left out)."""
    if "cca" not in flows.columns or flows.empty:
        return {}
    known = flows[flows["cca"].notna() & (flows["cca"].astype(str) != "")]
    return dict(zip(known["flow"].astype(str), known["cca"].astype(str), strict=True))


def clock_note(a: Analysis, delay: str = "rtt") -> str:
    """Say which one-way delays drawn cross hosts, and how far their clocks can be trusted.

    Empty when none does. A one-way delay is drawn for every packet flow
    with ``delay: owd``, else for those without echo replies; between hosts it
    is corrected with their measured clock offsets (``Analysis.clocks``).
    """
    owd_flows = set(a.owd["flow"].unique())
    if delay != "owd":
        owd_flows -= set(a.rtt["flow"].unique())
    rows = a.clocks[a.clocks["flow"].isin(owd_flows)]
    if rows.empty:
        return ""
    parts = []
    for (src, dst, same, u), group in rows.groupby(["from_host", "to_host", "same_clock", "uncertainty_ms"], sort=True):
        how = "one clock (same kernel)" if same else f"clocks aligned by measured offsets, uncertainty ±{u:.2f} ms"
        parts.append(f"one-way delay of {', '.join(sorted(group['flow']))} crosses hosts {src} → {dst}: {how}")
    return "; ".join(parts)


def fct_figure(a: Analysis, spec: ChartsFCT) -> go.Figure:
    """Return FCT against length (kB, log axis), one series per FlowSeries pattern."""
    fig = go.Figure()
    for name, group in fct_groups(a.flows, spec):
        fig.add_trace(
            go.Scatter(
                x=group["bytes"].to_numpy() / 1000,
                y=group["fct_s"].to_numpy(),
                name=name,
                mode="markers",
                text=[label(f, spec.flow_label) for f in group["flow"]],
                hovertemplate="%{text}: %{x:.1f} kB in %{y:.4f} s<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": spec.title},
        template=TEMPLATE,
        height=600,
        xaxis={"title": {"text": "Length (kB)"}, "type": "log"},
        yaxis={"title": {"text": "Flow completion time (s)"}, "rangemode": "tozero"},
    )
    if spec.options:
        fig.update_layout(spec.options)
    return fig


def fct_groups(flows: pd.DataFrame, spec: ChartsFCT) -> list[tuple[str, pd.DataFrame]]:
    """Split the completed stream flows into the chart's series."""
    done = flows[(flows["kind"] == "stream") & flows["fct_s"].notna()]
    if not spec.series:
        return [("flows", done)] if len(done) else []
    out = []
    for s in spec.series:
        pattern = re.compile(s.pattern)
        match = done[done["flow"].map(lambda f, p=pattern: p.search(f) is not None)]
        if len(match):
            out.append((s.name, match))
    return out


def write_figure(
    fig: go.Figure,
    directory: Path,
    names: tuple[str, ...],
    table_html: str,
    subtitle: str,
    draw_image: Any,
    root: Path | None = None,
    banner: str = "",
) -> list[Path]:
    """Write the figure's page(s) and image(s) to the names in directory.

    A page loads plotly.js from the result folder ``root`` (default: the
    page's folder) by relative path; the script is written there if missing.
    Raises ValueError for a name that is not .html or an image suffix, and
    FileExistsError for a file that exists (nothing is overwritten).
    """
    written = []
    for name in names:
        path = directory / name
        if path.suffix == ".html":
            title, _, note = str(fig.layout.title.text or name).partition("<br>")
            # The page's heading is the title: the chart on the page keeps only
            # its note, so the page does not say its title twice (issue 30).
            on_page = go.Figure(fig)
            on_page.update_layout(title={"text": note or None})
            body = figure_div(on_page) + "<h2>Flows</h2>" + table_html
            script = write_plotly_js(directory if root is None else root)
            _write_new(path, page(title, body, subtitle, script_tag(path.parent, script), banner).encode())
        elif path.suffix in IMAGE_SUFFIXES:
            draw_image(path)
        else:
            raise ValueError(f"{name}: chart outputs end in .html, {', '.join(IMAGE_SUFFIXES)}")
        written.append(path)
    return written


def _write_new(path: Path, data: bytes) -> None:
    # "xb": a report never overwrites a file (results are never rewritten in place).
    with open(path, "xb") as f:
        f.write(data)


def charts_time_series(
    a: Analysis,
    spec: ChartsTimeSeries,
    directory: Path,
    subtitle: str = "",
    root: Path | None = None,
    banner: str = "",
) -> go.Figure | None:
    """Write the time series page and image; returns the figure.

    None, and nothing written, when there is nothing to draw (no goodput
    and no delay point). ``root`` is the result folder (see write_figure).
    """
    fig = timeseries_figure(a, spec)
    if not fig.data:
        return None
    from antler.report.events import draw_events, rig_events

    draw_events(fig, rig_events(directory, a.t0))

    def draw(path: Path) -> None:
        matplotlib_timeseries(fig, path, spec.image_options)

    write_figure(fig, directory, spec.to, flow_table(a.flows, spec.flow_label), subtitle, draw, root, banner)
    return fig


def charts_fct(
    a: Analysis, spec: ChartsFCT, directory: Path, subtitle: str = "", root: Path | None = None, banner: str = ""
) -> go.Figure | None:
    """Write the FCT page and image; returns the figure.

    None, and nothing written, without a flow to draw: FCT is known only for
    length-limited flows that completed (see FLOW_COLUMNS' fct_s), so a test
    of timed flows gets no FCT chart. ``root`` is the result folder (see
    write_figure).
    """
    fig = fct_figure(a, spec)
    if not fig.data:
        return None

    def draw(path: Path) -> None:
        matplotlib_fct(fig, path, spec.image_options)

    write_figure(fig, directory, spec.to, flow_table(a.flows, spec.flow_label), subtitle, draw, root, banner)
    return fig
