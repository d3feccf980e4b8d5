"""Latency under load: each echo flow's RTT while no stream flow runs (idle) and while any does (loaded).

This is the bufferbloat figure of flent's RRUL test and of crusader: the
delay a queue adds once bulk flows fill it. A stream flow **runs** from its
``start_s`` (the sender's start) to its last byte's arrival at the receiver
(:func:`antler.report.analyze.fairness.last_byte_s`); the **loaded** phase is
the union of those intervals, the **idle** phase the rest of the test. An
echoed packet belongs to the phase its first send falls in (the RTT series'
``t_s``); packets that never came back have no RTT and count in neither.

- ``rtt_ms_idle_median``: the median RTT of the packets sent while idle;
- ``rtt_ms_loaded_median``, ``rtt_ms_loaded_p99``: the median and 99th
  percentile of those sent while loaded;
- ``induced_latency_ms``: ``rtt_ms_loaded_median - rtt_ms_idle_median``,
  the latency the load added.

Percentiles interpolate linearly (numpy's default, as pandas' ``quantile``).
A phase without packets has NaN figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from antler.report.analyze.fairness import by_flow, last_byte_s

LOAD_COLUMNS = ["rtt_ms_idle_median", "rtt_ms_loaded_median", "rtt_ms_loaded_p99", "induced_latency_ms"]
"""LOAD_COLUMNS are the latency-under-load columns of flows.parquet (echo flows) and summary.parquet (pooled)."""


def loaded_intervals(flows: pd.DataFrame, received: pd.DataFrame) -> np.ndarray:
    """Return the loaded phase as sorted, disjoint [start_s, end_s] intervals, shape (k, 2), in seconds.

    ``flows`` is the flows table (flow, kind, start_s), ``received`` the
    receiver curves (Analysis.received). A stream flow that never received
    a byte adds no interval.
    """
    curves = by_flow(received)
    spans = []
    for flow, start in zip(flows["flow"], flows["start_s"], strict=True):
        if flow in curves and not np.isnan(start):
            end = last_byte_s(*curves[flow])
            if not np.isnan(end) and end >= start:
                spans.append((float(start), end))
    if not spans:
        return np.empty((0, 2))
    spans.sort()
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.array(merged, dtype=float)


def is_loaded(t_s: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Return, per time in t_s (s), whether it falls in one of the intervals (both ends included)."""
    t = np.asarray(t_s, float)
    if not len(intervals):
        return np.zeros(len(t), bool)
    i = np.searchsorted(intervals[:, 0], t, side="right") - 1
    ok = i >= 0
    return ok & (t <= intervals[np.maximum(i, 0), 1])


def phase_figures(t_s: np.ndarray, rtt_ms: np.ndarray, intervals: np.ndarray) -> dict[str, float]:
    """Return LOAD_COLUMNS for RTT samples (send times t_s in s, RTTs in ms; NaN RTTs are skipped)."""
    t, r = np.asarray(t_s, float), np.asarray(rtt_ms, float)
    keep = ~np.isnan(r)
    t, r = t[keep], r[keep]
    loaded = is_loaded(t, intervals)
    idle_r, load_r = r[~loaded], r[loaded]
    idle = float(np.median(idle_r)) if len(idle_r) else float("nan")
    med = float(np.median(load_r)) if len(load_r) else float("nan")
    p99 = float(np.percentile(load_r, 99)) if len(load_r) else float("nan")
    return dict(zip(LOAD_COLUMNS, (idle, med, p99, med - idle), strict=True))


def latency_under_load(rtt: pd.DataFrame, intervals: np.ndarray) -> pd.DataFrame:
    """Return LOAD_COLUMNS per flow of an RTT series (flow, t_s, rtt_ms), indexed by flow."""
    if rtt.empty:
        return pd.DataFrame(columns=LOAD_COLUMNS, dtype=float)
    rows = {
        str(flow): phase_figures(g["t_s"].to_numpy(), g["rtt_ms"].to_numpy(), intervals)
        for flow, g in rtt.groupby("flow", observed=True)
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=LOAD_COLUMNS).rename_axis("flow")
