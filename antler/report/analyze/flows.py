"""The flows table, ``flows.parquet``: its columns in order, each with its unit and its meaning per flow kind.

Analysis (:func:`antler.report.analyze.analyze`) makes one row per flow; a
kind of flow lacks some columns, which :func:`fill_columns` adds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FLOW_COLUMNS = [
    "flow",
    "kind",
    "direction",
    "cca",
    "start_s",
    "bytes",
    "duration_s",
    "goodput_mbps",
    "share",
    "fct_s",
    "sent",
    "received",
    "lost",
    "loss_pct",
    "lost_up",
    "loss_up_pct",
    "lost_down",
    "loss_down_pct",
    "duplicates",
    "late",
    "early",
    "rtt_ms_median",
    "rtt_ms_p99",
    "owd_ms_median",
    "owd_ms_p99",
    "rtt_ms_idle_median",
    "rtt_ms_loaded_median",
    "rtt_ms_loaded_p99",
    "induced_latency_ms",
    "retrans",
    "send_err_us_median",
    "send_err_us_p99",
    "qdelay_ms_median",
    "qdelay_ms_p99",
    "drops",
    "marks",
    "ce_pct",
    "ecn",
    "ce_up",
    "ce_down",
    "status",
    "error",
]
"""FLOW_COLUMNS are the columns of ``flows.parquet``, in order: one row per flow, sorted by start_s, then flow.

A column that does not apply to a flow's kind is NaN (``-`` below); counts
are floats for that reason. Every flow the test named has a row, one that
failed to connect or never started too (its metrics NaN), with its status. Start times are seconds since the test's start
(the earliest ``tinit`` of any flow end). A stream flow's figures are its
receiver's, but for RTT and retransmits, which are its sender's TCP_INFO; a
packet flow's sends are the client's, and its arrivals are counted at the
server where it recorded them, else at the client (the echoes). Percentiles
interpolate linearly, as pandas' ``quantile``.

==================  ========  ============================================  ============================================
column              unit      stream flow (kind "stream", TCP)              packet flow (kind "packet", UDP)
==================  ========  ============================================  ============================================
flow                          the flow ID                                   the flow ID
kind                          "stream"                                      "packet"
direction                     "up" (client sends) or "down" (server         ""
                              sends); "" without an info row
cca                           the sender's congestion control ("" without   ""
                              info)
start_s             s         when the sender began: its end's tinit (else  the client's first send (else the client's
                              its first send sample, else the client's      tinit, else NaN)
                              tinit, else the first receive sample)
bytes               bytes     RECEIVED: the receiver's final byte count (0  SENT: the lengths of the client's sends
                              without receive samples)                      summed (UDP payloads, antler's packet header
                                                                            included)
duration_s          s         the receiver's time from its tinit (else      the client's first send to its last send
                              start_s) to the last byte's arrival
goodput_mbps        Mbit/s    bytes * 8 / duration_s / 1e6 (NaN when        -
                              duration_s <= 0)
share                         its part of the stream flows' bytes in the    -
                              common window, x_i / sum x_j
                              (antler.report.analyze.fairness); NaN
                              outside the window
fct_s               s         start_s to the last byte's arrival (flow      -
                              completion time); NaN unless the flow was
                              length-limited and received all of it (in
                              results whose info has no length column:
                              every flow)
sent                packets   -                                             the client's sends (a seq sent twice counts
                                                                            twice)
received            packets   -                                             distinct seqs that arrived
lost                packets   -                                             sent - received, at least 0
loss_pct            %         -                                             100 * lost / sent (NaN when nothing was
                                                                            sent)
lost_up             packets   -                                             requests that never reached the server:
                                                                            sent - the distinct seqs the server
                                                                            received (NaN where it recorded nothing)
loss_up_pct         %         -                                             100 * lost_up / sent
lost_down           packets   -                                             replies the server sent that never reached
                                                                            the client: distinct seqs it echoed - the
                                                                            distinct seqs of echoes the client
                                                                            received (NaN without recorded echoes, as
                                                                            for a flow that asks for none)
loss_down_pct       %         -                                             100 * lost_down / the distinct seqs the
                                                                            server echoed
duplicates          packets   -                                             arrivals of a seq that had arrived already
late                packets   -                                             first arrivals after a higher seq had
                                                                            arrived
early               packets   -                                             first arrivals before a lower seq arrived
rtt_ms_median       ms        median of the sender's smoothed RTT samples   median RTT of the echoed packets: a packet's
                              (tcpi_rtt, the non-zero ones)                 first echo at the client minus its first
                                                                            send
rtt_ms_p99          ms        99th percentile of the same                   99th percentile of the same
owd_ms_median       ms        -                                             median one-way delay: a packet's first
                                                                            arrival at the server minus its first send
                                                                            (across two hosts: on the driver's clock by
                                                                            their measured offsets, see Analysis.clocks)
owd_ms_p99          ms        -                                             99th percentile of the same
rtt_ms_idle_median  ms        -                                             median RTT of the echoes sent while no
                                                                            stream flow ran
                                                                            (antler.report.analyze.underload)
rtt_ms_loaded_      ms        -                                             median RTT of the echoes sent while a
median                                                                      stream flow ran
rtt_ms_loaded_p99   ms        -                                             99th percentile of the same
induced_latency_ms  ms        -                                             rtt_ms_loaded_median - rtt_ms_idle_median
retrans             segments  the sender's total_retrans (its largest       -
                              sample)
send_err_us_median  µs        -                                             median send-time error of the client's
                                                                            sends: sent minus scheduled (NaN without
                                                                            sched_t_ns)
send_err_us_p99     µs        -                                             99th percentile of the same
qdelay_ms_median    ms        median sojourn in a userspace bottleneck of   the same, of its packets (requests and
                              the flow's packets it sent (queue.parquet;    echoes alike)
                              NaN without one)
qdelay_ms_p99       ms        99th percentile of the same                   99th percentile of the same
drops               packets   the flow's packets the userspace bottleneck   the same
                              dropped
marks               packets   the flow's packets it sent with CE set there  the same
ce_pct              %         the sender's delivered_ce over delivered      -
                              (its last TCP_INFO sample)
ecn                           1 if the connection negotiated ECN, else 0    -
                              (TCP_INFO's TCPI_OPT_ECN)
ce_up               packets   -                                             requests that reached the server with CE
ce_down             packets   -                                             echoes that reached the client with CE
status                        "ok", "failed" or "cancelled": how the flow   the same
                              ended (antler.report.analyze.outcomes); ""
                              in results before format 2
error                         the flow's error, or why it was cancelled     the same
                              ("never started: ..."); "" when ok
==================  ========  ============================================  ============================================
"""


def fill_columns(flows: pd.DataFrame) -> pd.DataFrame:
    """Add the FLOW_COLUMNS a kind of flow lacks (NaN; "" for status and error)."""
    for c in FLOW_COLUMNS:
        if c not in flows.columns:
            flows[c] = "" if c in ("status", "error") else np.nan
    return flows


def column_dtype(column: str) -> str:
    """Return a column's dtype in an empty flows table: text columns are objects, the rest floats."""
    return "object" if column in ("flow", "kind", "direction", "cca", "status", "error") else "float64"
