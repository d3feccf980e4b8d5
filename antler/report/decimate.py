"""Decimation: what a chart draws of a long time series, so a page stays small and spikes stay.

A series longer than the chart's ``max_points`` per flow is drawn as the
minimum and maximum of each of ``max_points / 2`` equal time buckets
(:func:`decimate`); a shorter one is drawn whole. :func:`flow_points` splits
a series frame into its flows' points for the plotly figures
(:mod:`antler.report.charts`); the static images (:mod:`antler.report.images`)
decimate again to the points an image can show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from antler.report.analyze.columnar import is_sorted, run_starts


def decimate(t: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Return the indices to draw: all, or each time bucket's min and max.

    The time span is cut into ``max_points // 2`` equal buckets and each
    bucket keeps the first row of its minimum and of its maximum (ascending
    indices). Keeping both extremes of every bucket preserves the spikes a
    researcher looks for (a delay excursion, a goodput collapse) while
    bounding page size; a series under the cap is drawn whole. A bucket with
    only NaN values (nothing measured: packets lost in an outage) keeps its
    first row, so the break survives and no line joins its neighbours.
    """
    n = len(t)
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    buckets = max(max_points // 2, 1)
    lo = t.min()
    span = float(t.max() - lo) or 1.0
    b = np.minimum(((t - lo) / span * buckets).astype(np.int64), buckets - 1)
    # Rows of one bucket are made contiguous (already so when t is sorted),
    # so each bucket's min and max are one reduceat over segments.
    order = None if is_sorted(b) else np.argsort(b, kind="stable")
    if order is not None:
        b, y = b[order], y[order]
    starts = run_starts(b)
    sizes = np.diff(np.append(starts, n))
    keep = []
    for reduce in (np.fmin, np.fmax):  # NaN (no value) is never an extreme
        per_bucket = reduce.reduceat(y, starts)
        extreme = np.repeat(per_bucket, sizes)
        hit = np.flatnonzero(y == extreme)
        keep.append(hit[run_starts(b[hit])])  # the first hit in each bucket
    keep.append(starts[np.isnan(per_bucket)])  # nothing measured in the bucket: a break
    idx = np.union1d(np.union1d(keep[0], keep[1]), keep[2])
    return (np.sort(order[idx]) if order is not None else idx).astype(np.int64)


def flow_points(df: pd.DataFrame, value: str, max_points: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Split a series frame into (flow, t, y) per flow, in time order, decimated to max_points.

    Works on the categorical flow codes (analysis hands the series sorted by
    flow, then time): no per-flow pandas group objects over millions of rows.
    """
    if df.empty:
        return []
    flow = df["flow"].astype("category")
    codes = flow.cat.codes.to_numpy().astype(np.int64)
    t_all, y_all = df["t_s"].to_numpy(dtype=float), df[value].to_numpy(dtype=float)
    if not is_sorted(codes):
        # In order of first appearance, as groupby(sort=False) gave.
        _, first = np.unique(codes, return_index=True)
        rank = np.empty(codes.max() + 1, np.int64)
        rank[codes[np.sort(first)]] = np.arange(len(first))
        order = np.argsort(rank[codes], kind="stable")
        codes, t_all, y_all = codes[order], t_all[order], y_all[order]
    starts = run_starts(codes)
    ends = np.append(starts[1:], len(codes))
    out = []
    names = flow.cat.categories
    for a, b in zip(starts, ends, strict=True):
        if codes[a] < 0:
            continue  # a row without a flow
        t, y = t_all[a:b], y_all[a:b]
        if not is_sorted(t):
            o = np.argsort(t, kind="stable")
            t, y = t[o], y[o]
        idx = decimate(t, y, max_points)
        out.append((str(names[codes[a]]), t[idx], y[idx]))
    return out
