"""The summary table, ``summary.parquet``: one row per test, the figures a comparison of tests starts from.

Made by the ``analyze`` report step beside flows.parquet, from the same
analysis: the stream flows' fairness over their common window
(:mod:`.fairness`), the echo flows' latency under load (:mod:`.underload`),
and the test's delay and loss pooled over its packet flows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from antler.report.analyze.fairness import window_fairness
from antler.report.analyze.underload import LOAD_COLUMNS, latency_under_load, loaded_intervals, phase_figures

SUMMARY_COLUMNS = [
    "flows",
    "failed",
    "streams",
    "link_mbps",
    "window_start_s",
    "window_end_s",
    "window_s",
    "goodput_mbps",
    "jain",
    "jain_1s_median",
    "jain_1s_min",
    "jain_1s_bins",
    "rtt_ms_median",
    "rtt_ms_p99",
    *LOAD_COLUMNS,
    "owd_ms_median",
    "owd_ms_p99",
    "loss_pct",
    "retrans",
]
"""SUMMARY_COLUMNS are the columns of ``summary.parquet``, in order; ``share_<cca>`` columns follow them.

All are float64 (counts too, NaN where they do not apply).

====================  ========  ===============================================================
column                unit      meaning
====================  ========  ===============================================================
flows                           the flows the test names (rows of flows.parquet)
failed                          of those, the ones whose status is "failed"
streams                         the stream flows in the common window (those that received data)
link_mbps             Mbit/s    the rig's bottleneck rate (meta.json ``rig.rate_bps``; NaN without)
window_start_s        s         the common window's start: the latest start_s of those flows
window_end_s          s         its end: the earliest last-byte arrival of those flows
window_s              s         window_end_s - window_start_s (NaN when they never all ran at once)
goodput_mbps          Mbit/s    sum over the window's flows of the bytes received in the window
                                * 8 / window_s / 1e6 (receiver counts interpolated linearly
                                between samples)
jain                            Jain's index (sum x)^2 / (n sum x^2) of those bytes (Jain, Chiu,
                                Hawe 1984, DEC-TR-301)
jain_1s_median                  the median of Jain's index over the window's whole 1 s bins
jain_1s_min                     the smallest of them
jain_1s_bins                    the bins that had an index (some flow delivered in them)
rtt_ms_median         ms        the median RTT of every echoed packet of every packet flow
rtt_ms_p99            ms        its 99th percentile
rtt_ms_idle_median    ms        the median of those sent while no stream flow ran
rtt_ms_loaded_median  ms        the median of those sent while any stream flow ran
rtt_ms_loaded_p99     ms        the 99th percentile of the same
induced_latency_ms    ms        rtt_ms_loaded_median - rtt_ms_idle_median
owd_ms_median         ms        the median one-way delay of every packet that reached a server
owd_ms_p99            ms        its 99th percentile
loss_pct              %         100 * sum of the packet flows' lost / sum of their sent
retrans               segments  the stream flows' retransmits, summed
share_<cca>                     the summed shares of the window's flows of that CCA; only when
                                they use more than one CCA
====================  ========  ===============================================================
"""


def conclude(
    flows: pd.DataFrame,
    received: pd.DataFrame,
    rtt: pd.DataFrame,
    owd: pd.DataFrame,
    meta: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the flows table with ``share`` and LOAD_COLUMNS filled in, and the one-row summary table.

    ``flows`` has FLOW_COLUMNS; ``received``, ``rtt`` and ``owd`` are the
    analysis' series (Analysis.received, .rtt, .owd); ``meta`` the test's
    meta.json (for the link rate). The flows table's row order is kept.
    """
    figures, share = window_fairness(flows, received)
    intervals = loaded_intervals(flows[flows["kind"] == "stream"], received)
    load = latency_under_load(rtt, intervals)
    flows = flows.copy()
    flows["share"] = flows["flow"].map(share).astype(float)
    for c in LOAD_COLUMNS:
        flows[c] = flows["flow"].map(load[c]).astype(float) if len(load) else np.nan
    packets = flows[flows["kind"] == "packet"]
    rate = ((meta or {}).get("rig") or {}).get("rate_bps")
    row: dict[str, float] = {
        "flows": float(len(flows)),
        "failed": float((flows["status"] == "failed").sum()),
        "link_mbps": float(rate) / 1e6 if rate else float("nan"),
        **figures,
        **_pooled(rtt, "rtt_ms"),
        **phase_figures(rtt["t_s"].to_numpy(), rtt["rtt_ms"].to_numpy(), intervals),
        **_pooled(owd, "owd_ms"),
        "loss_pct": _ratio_pct(packets["lost"].sum(), packets["sent"].sum()),
        "retrans": float(flows.loc[flows["kind"] == "stream", "retrans"].sum(min_count=1)),
    }
    shares = sorted(k for k in row if k.startswith("share_"))
    summary = pd.DataFrame([{c: row.get(c, np.nan) for c in [*SUMMARY_COLUMNS, *shares]}], dtype=float)
    return flows, summary


def _pooled(series: pd.DataFrame, value: str) -> dict[str, float]:
    v = series[value].to_numpy(float) if len(series) else np.empty(0)
    v = v[~np.isnan(v)]
    prefix = value.removesuffix("_ms")
    if not len(v):
        return {f"{prefix}_ms_median": float("nan"), f"{prefix}_ms_p99": float("nan")}
    return {f"{prefix}_ms_median": float(np.median(v)), f"{prefix}_ms_p99": float(np.percentile(v, 99))}


def _ratio_pct(lost: float, sent: float) -> float:
    return float(100.0 * lost / sent) if sent and not np.isnan(sent) else float("nan")
