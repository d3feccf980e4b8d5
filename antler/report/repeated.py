"""The comparison page's charts of a sweep with repetitions (``sweep.repeat``): intervals, CDFs and box plots.

When the tests differ in the ID key ``rep``, the page draws, instead of one
line per repetition:

- each compared flow metric (``index.compare``) and the summary's Jain index
  and CCA shares (``share_<cca>``) as the mean over the repetitions against
  the swept key, with 95 % percentile-bootstrap interval bars
  (antler.results.intervals; Efron & Tibshirani 1993, ch. 13.3). Two values
  of one line whose intervals do not overlap are star markers, and listed
  under the chart;
- a CDF of the echo flows' RTT per combination of the swept keys, over every
  packet of every repetition (flent's CDF plot);
- box plots of the stream flows' goodput and FCT per combination, one point
  per flow and repetition (flent's box plot; plotly's quartiles, whiskers to
  the furthest point within 1.5 IQR).
"""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from antler.report.html import TABLE_COLUMNS, TEMPLATE
from antler.report.spec import IndexSpec
from antler.report.summary import sort_key, x_key
from antler.results.repetitions import REP_KEY, intervals
from antler.results.tables import Results, id_columns

ALL = "all"
"""ALL is the x value when only ``rep`` varies: every test is one combination."""


def has_repetitions(keys: list[str]) -> bool:
    """Tell whether the varying ID keys include the repetition (``rep``)."""
    return REP_KEY in keys


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Tell whether two closed intervals (low, high) share a point; NaN bounds count as overlapping (no claim)."""
    if any(np.isnan(v) for v in (*a, *b)):
        return True
    return a[0] <= b[1] and b[0] <= a[1]


def repeated_figures(results: Results, spec: IndexSpec, keys: list[str]) -> tuple[list[go.Figure], list[str]]:
    """Return the charts of a sweep with repetitions (see the module) and the notes that go under them.

    ``keys`` are the varying ID keys (``rep`` among them). A metric no test
    has gives a note instead of a chart.
    """
    swept = [k for k in keys if k != REP_KEY]
    x = x_key(swept, spec) if swept else ""
    others = [k for k in swept if k != x]
    figs: list[go.Figure] = []
    notes: list[str] = []
    pattern = re.compile(spec.flow)
    for metric in spec.compare:
        fig = _interval_figure(results, "flows", [metric], x, others, pattern, notes)
        if fig is None:
            notes.append(f"No chart of {metric}: no flow matching {spec.flow!r} has it.")
        else:
            figs.append(fig)
    summary = _table(results, "summary")
    if not summary.empty:
        fig = _interval_figure(results, "summary", ["jain"], x, others, pattern, notes)
        if fig is not None:
            figs.append(fig)
        shares = sorted(c for c in summary.columns if str(c).startswith("share_"))
        if shares:
            fig = _interval_figure(results, "summary", shares, x, others, pattern, notes, "CCA shares")
            if fig is not None:
                figs.append(fig)
    for fig in (
        _rtt_cdf(results, x, others),
        *(_box(results, m, x, others, pattern) for m in ("goodput_mbps", "fct_s")),
    ):
        if fig is not None:
            figs.append(fig)
    return figs, notes


def repeated_table(results: Results, spec: IndexSpec, keys: list[str]) -> str:
    """Return the summary figures per combination as an HTML table: mean and 95 % interval of each.

    Its columns are the swept keys but ``rep``, the number of repetitions,
    then goodput, Jain's index, its per-second median, each CCA's share and
    the echo flows' loaded RTT and induced latency (summary.parquet). "" when
    no test has a summary.
    """
    summary = _table(results, "summary")
    if summary.empty:
        return ""
    swept = [k for k in keys if k != REP_KEY]
    metrics = [m for m in ("goodput_mbps", "jain", "jain_1s_median") if m in summary.columns]
    metrics += sorted(str(c) for c in summary.columns if str(c).startswith("share_"))
    metrics += [m for m in ("rtt_ms_loaded_median", "induced_latency_ms") if m in summary.columns]
    cells: dict[tuple[str, ...], dict[str, str]] = {}
    for metric in metrics:
        iv = intervals(results, metric, table="summary")
        for rec in iv.to_dict("records"):
            combo = tuple(str(rec[_column(results, "summary", k)]) for k in swept)
            row = cells.setdefault(combo, {"n": f"{int(rec['n'])}"})
            row["n"] = str(max(int(row["n"]), int(rec["n"])))
            row[metric] = "" if not rec["n"] else f"{rec['mean']:.4g} [{rec['ci_low']:.4g}, {rec['ci_high']:.4g}]"
    heads = [*swept, "runs", *metrics]
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in combo)
        + f"<td>{row['n']}</td>"
        + "".join(f"<td>{html.escape(row.get(m, ''))}</td>" for m in metrics)
        + "</tr>"
        for combo, row in sorted(cells.items(), key=lambda kv: [sort_key(v) for v in kv[0]])
    )
    return (
        "<h2>Across repetitions</h2><p class='note'>Per combination of the swept keys: the mean of the "
        "repetitions and its 95 % percentile-bootstrap interval (summary.parquet; Jain's index over the "
        "stream flows' goodput in their common window).</p>"
        f"<table class='repetitions'><thead><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in heads)}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _table(results: Results, kind: str) -> pd.DataFrame:
    try:
        return results.concat(kind)
    except KeyError:
        return pd.DataFrame()


def _column(results: Results, kind: str, key: str) -> str:
    """_column is the name Results.concat gives an ID key beside a table's columns (``id_cca`` beside flows' cca)."""
    for test in results.values():
        try:
            own = test[kind].columns
        except KeyError:
            continue
        return id_columns({key: ""}, own)[key]
    return key


def _combo(results: Results, kind: str, row: Any, x: str, others: list[str]) -> tuple[str, str]:
    """_combo is a row's x value and its other keys' text (``rig_rtt=10ms``)."""
    xv = str(row[_column(results, kind, x)]) if x else ALL
    rest = " ".join(f"{k}={row[_column(results, kind, k)]}" for k in others)
    return xv, rest


def _interval_figure(
    results: Results,
    kind: str,
    metrics: list[str],
    x: str,
    others: list[str],
    pattern: re.Pattern[str],
    notes: list[str],
    title: str = "",
) -> go.Figure | None:
    """_interval_figure draws the mean and interval of each metric per x, a line per series; None without values.

    A series is a flow (for flows) or a metric (for several summary ones),
    and the other keys' values. Notes name each pair of x values of a
    series whose intervals do not overlap.
    """
    rows = []
    for metric in metrics:
        try:
            iv = intervals(results, metric, table=kind)
        except KeyError:
            continue
        for rec in iv.to_dict("records"):
            if rec["n"] == 0 or (kind == "flows" and pattern.search(str(rec["flow"])) is None):
                continue
            xv, rest = _combo(results, kind, rec, x, others)
            name = str(rec["flow"]) if kind == "flows" else (metric if len(metrics) > 1 else "")
            rows.append({**rec, "x": xv, "series": " ".join(p for p in (name, rest) if p) or metric})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    order = sorted(df["x"].unique(), key=sort_key)
    title = title or " and ".join(metrics)
    fig = go.Figure()
    for series, g in df.groupby("series", sort=True):
        g = g.assign(rank=g["x"].map(order.index)).sort_values("rank")
        ci = list(zip(g["ci_low"], g["ci_high"], strict=True))
        apart = [False] * len(g)
        xs = list(g["x"])
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                if not overlaps(ci[i], ci[j]):
                    apart[i] = apart[j] = True
                    notes.append(
                        f"{title}, {series}: {x or ALL}={xs[i]} and {xs[j]} differ beyond their 95 % intervals "
                        f"([{ci[i][0]:.4g}, {ci[i][1]:.4g}] vs [{ci[j][0]:.4g}, {ci[j][1]:.4g}])."
                    )
        mean = g["mean"].to_numpy(float)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=mean,
                name=str(series),
                mode="lines+markers",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": g["ci_high"].to_numpy(float) - mean,
                    "arrayminus": mean - g["ci_low"].to_numpy(float),
                },
                marker={"symbol": ["star" if a else "circle" for a in apart], "size": [12 if a else 8 for a in apart]},
                text=[
                    f"n={int(n)}, 95 % CI [{lo:.4g}, {hi:.4g}]"
                    for n, lo, hi in zip(g["n"], g["ci_low"], g["ci_high"], strict=True)
                ],
                hovertemplate="%{y:.4g} (%{text})<extra>%{fullData.name}</extra>",
            )
        )
    unit = TABLE_COLUMNS.get(metrics[0], metrics[0]) if len(metrics) == 1 else "share of the window's goodput"
    fig.update_layout(
        title={"text": f"{title} vs {x or ALL}: mean of the repetitions, 95 % interval"},
        template=TEMPLATE,
        height=450,
        xaxis={"title": {"text": x or ALL}, "type": "category", "categoryorder": "array", "categoryarray": order},
        yaxis={"title": {"text": unit}, "rangemode": "tozero"},
        showlegend=True,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _rtt_cdf(results: Results, x: str, others: list[str]) -> go.Figure | None:
    """_rtt_cdf draws the empirical CDF of the echo flows' RTT per combination, all packets of all repetitions."""
    from antler.report.analyze import analyze

    samples: dict[str, list[np.ndarray]] = {}
    for test in results.values():
        try:
            rtt = analyze(test).rtt
        except Exception:  # a test whose data cannot be analysed draws nothing here (its own page says why)
            continue
        values = rtt["rtt_ms"].to_numpy(float)
        values = values[~np.isnan(values)]
        if not len(values):
            continue
        combo = " ".join([f"{x}={test.id.get(x, '')}" if x else ALL, *(f"{k}={test.id.get(k, '')}" for k in others)])
        samples.setdefault(combo, []).append(values)
    if not samples:
        return None
    fig = go.Figure()
    for combo in sorted(samples, key=sort_key):
        v = np.sort(np.concatenate(samples[combo]))
        p = np.arange(1, len(v) + 1) / len(v)
        fig.add_trace(
            go.Scatter(x=v, y=p, name=f"{combo} ({len(samples[combo])} runs, {len(v)} packets)", mode="lines")
        )
    fig.update_layout(
        title={"text": "RTT of the echo flows: CDF per combination, every packet of every repetition"},
        template=TEMPLATE,
        height=450,
        xaxis={"title": {"text": "RTT (ms)"}},
        yaxis={"title": {"text": "fraction of packets"}, "range": [0, 1]},
        showlegend=True,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _box(results: Results, metric: str, x: str, others: list[str], pattern: re.Pattern[str]) -> go.Figure | None:
    """_box draws a box per flow and combination of one flow metric, a point per repetition; None without values."""
    df = _table(results, "flows")
    if df.empty or metric not in df.columns:
        return None
    df = df[df[metric].notna() & df["flow"].map(lambda f: pattern.search(str(f)) is not None)]
    if df.empty:
        return None
    combos = [_combo(results, "flows", r, x, others) for r in df.to_dict("records")]
    df = df.assign(x=[" ".join(p for p in c if p) for c in combos])
    order = sorted(df["x"].unique(), key=sort_key)
    fig = go.Figure()
    for flow, g in df.groupby("flow", sort=True):
        fig.add_trace(go.Box(x=list(g["x"]), y=g[metric].to_numpy(float), name=str(flow), boxpoints="all"))
    fig.update_layout(
        title={"text": f"{metric} per flow: box of the repetitions"},
        template=TEMPLATE,
        height=450,
        boxmode="group",
        xaxis={
            "title": {"text": " ".join([x or ALL, *others])},
            "type": "category",
            "categoryorder": "array",
            "categoryarray": order,
        },
        yaxis={"title": {"text": TABLE_COLUMNS.get(metric, metric)}, "rangemode": "tozero"},
        showlegend=True,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
