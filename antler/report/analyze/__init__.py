"""Analysis of a test's stored measurements: per-flow metrics and the charts' time series.

Everything here is columnar (numpy over Arrow columns, pandas group-bys): no
Python loop ever runs per sample, so ten million packet records analyse in
about the time it takes to read them (see bench/analyze.py). This module is
the API; the stream metrics are in :mod:`.streams`, the packet metrics in
:mod:`.packets`, and the array toolkit both use in :mod:`.columnar`.

Times: every series' ``t_s`` is seconds since the test's first flow began (the
earliest ``tinit`` of any flow end), so stream and packet flows share one axis.
Each end's ``t_ns`` is relative to its own ``tinit``; adding the end's offset
from that start puts both ends on the test's clock. A ``tinit`` is by its
node's clock: where meta.json gives a node's measured clock offset to the
driver (``nodes[].clock_offset_ns``, 0 on the driver's own kernel), its
``tinit`` is moved onto the driver's clock first, so a one-way delay between
two hosts is as good as the two offsets: each is within half its
measurement's round trip (``clock_rtt_ns``), and :attr:`Analysis.clocks` says
so per flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.report.analyze.columnar import empty_series
from antler.report.analyze.outcomes import named_flows, with_outcomes
from antler.report.analyze.packets import analyze_packets, count_arrivals
from antler.report.analyze.streams import analyze_streams
from antler.results.tables import TestResult

__all__ = [
    "CLOCK_COLUMNS",
    "FLOW_COLUMNS",
    "PACKET_IO_READ",
    "STREAM_IO_READ",
    "TCP_INFO_READ",
    "Analysis",
    "analyze",
    "analyze_frames",
    "arrival_counts",
    "on_driver_clock",
    "owd_clocks",
    "packet_flows",
    "stream_flows",
]

FLOW_COLUMNS = [
    "flow",
    "kind",
    "direction",
    "cca",
    "start_s",
    "bytes",
    "duration_s",
    "goodput_mbps",
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
    "retrans",
    "send_err_us_median",
    "send_err_us_p99",
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
retrans             segments  the sender's total_retrans (its largest       -
                              sample)
send_err_us_median  µs        -                                             median send-time error of the client's
                                                                            sends: sent minus scheduled (NaN without
                                                                            sched_t_ns)
send_err_us_p99     µs        -                                             99th percentile of the same
status                        "ok", "failed" or "cancelled": how the flow   the same
                              ended (antler.report.analyze.outcomes); ""
                              in results before format 2
error                         the flow's error, or why it was cancelled     the same
                              ("never started: ..."); "" when ok
==================  ========  ============================================  ============================================
"""

CLOCK_COLUMNS = ["flow", "from_host", "to_host", "same_clock", "uncertainty_ms"]
"""CLOCK_COLUMNS are the columns of :attr:`Analysis.clocks` (see :func:`owd_clocks`)."""


@dataclass
class Analysis:
    """Analysis is a test's per-flow metrics and the time series its charts draw.

    ``flows`` has one row per flow, columns FLOW_COLUMNS (units and meanings
    there), sorted by start_s, then flow. Each series has a row per sample,
    sorted by flow, then time: ``flow`` is categorical, ``t_s`` seconds since
    the test's start ``t0``.

    - ``goodput``: flow, t_s, goodput_mbps. Per stream flow, one point per
      goodput interval with receive samples: t_s is the interval's last
      receive sample, goodput_mbps the bytes received since the previous
      point in Mbit/s (for the first, since the server end's tinit, else
      the client's); and a point of 0 at the end of each interval in which
      certainly nothing was delivered (an outage), so nothing is
      interpolated across it.
    - ``rtt``: flow, t_s, rtt_ms. Per packet that asked for an echo: t_s its
      first send, rtt_ms its first echo's arrival minus that send, in ms, or
      NaN when no echo came (a break in a line chart; in flows that got any
      echo at all).
    - ``owd``: flow, t_s, owd_ms. Per packet sent: t_s its first send,
      owd_ms its first arrival at the server minus that send, in ms, or NaN
      when it never arrived (in flows whose server recorded any arrival).

    ``t0`` is the test's start, the earliest ``tinit`` of any flow end (UTC;
    None without flows; the Unix epoch for tables in memory without info rows).
    ``clocks`` has a row per packet flow whose ends ran on two hosts
    (CLOCK_COLUMNS, see :func:`owd_clocks`).
    """

    flows: pd.DataFrame
    goodput: pd.DataFrame = field(default_factory=lambda: empty_series("goodput_mbps"))
    rtt: pd.DataFrame = field(default_factory=lambda: empty_series("rtt_ms"))
    owd: pd.DataFrame = field(default_factory=lambda: empty_series("owd_ms"))
    t0: pd.Timestamp | None = None
    clocks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CLOCK_COLUMNS))

    def delay(self, kind: str = "rtt") -> pd.DataFrame:
        """Delay returns the RTT or one-way delay series as columns flow, t_s, delay_ms.

        A flow without echo replies has no RTT; with ``kind`` "rtt" its one-way
        delay stands in, so every packet flow shows on the chart.
        """
        rtt = self.rtt.rename(columns={"rtt_ms": "delay_ms"})
        owd = self.owd.rename(columns={"owd_ms": "delay_ms"})
        if kind == "owd":
            return owd
        lacking = set(owd["flow"].unique()) - set(rtt["flow"].unique())
        if not lacking:
            return rtt
        missing = owd[owd["flow"].isin(lacking)]
        both = pd.concat([rtt.astype({"flow": str}), missing.astype({"flow": str})], ignore_index=True)
        return both.astype({"flow": "category"})


def analyze(test: TestResult, interval_s: float = 0.1) -> Analysis:
    """Analyze computes the flow metrics and series of one stored test.

    ``interval_s`` is the goodput interval in seconds: each point is the
    goodput between the last receiver samples of consecutive intervals. A
    table the test lacks counts as empty; a stored table that cannot be read,
    or lacks a column analysis reads (see TCP_INFO_READ and its siblings),
    raises pyarrow's ArrowInvalid (a ValueError).
    """
    nodes = test.meta.get("nodes") or []
    stream_info = on_driver_clock(test["stream_info"], nodes)
    packet_info = on_driver_clock(test["packet_info"], nodes)
    t0 = _t0(stream_info, packet_info)
    if t0 is None:
        a = _no_flows()
    else:
        stream_io = _read(test, "stream_io", STREAM_IO_READ)
        tcp_info = _read(test, "tcp_info", TCP_INFO_READ)
        stream_flows, goodput = analyze_streams(stream_info, stream_io, tcp_info, t0, interval_s)
        del stream_io
        packet_cols = PACKET_IO_READ + _optional(test, "packet_io", ["sched_t_ns"])
        packet_flows, rtt, owd = analyze_packets(packet_info, _read(test, "packet_io", packet_cols), t0)
        a = _combine(stream_flows, packet_flows, goodput, rtt, owd, t0)
        a.clocks = owd_clocks(packet_info, nodes, (test.meta.get("host") or {}).get("hostname", ""))
    errors = test["errors"]
    first_error = str(errors.sort_values("time")["message"].iloc[0]) if len(errors) else ""
    flows = with_outcomes(
        a.flows,
        test["flow_status"],
        named_flows(test.meta.get("config") or {}),
        first_error,
        recorded=test.format_version >= 2,
    )
    a.flows = _columns(flows)[FLOW_COLUMNS].sort_values(["start_s", "flow"], kind="stable").reset_index(drop=True)
    return a


def on_driver_clock(info: pd.DataFrame, nodes: list[dict[str, Any]]) -> pd.DataFrame:
    """On_driver_clock moves each flow end's ``tinit`` from its node's clock onto the driver's.

    ``nodes`` is meta.json's list of node facts; a node's ``clock_offset_ns``
    is its clock minus the driver's (ns). Ends on nodes without one (the
    driver's own, or a launcher that measures none) are left as they are.
    """
    offsets = {str(n.get("id")): int(n.get("clock_offset_ns") or 0) for n in nodes}
    if not len(info) or not any(offsets.values()):
        return info
    shift = info["node_id"].astype(str).map(offsets).fillna(0).astype("int64")
    return info.assign(tinit=info["tinit"] - pd.to_timedelta(shift, unit="ns"))


def owd_clocks(packet_info: pd.DataFrame, nodes: list[dict[str, Any]], driver_host: str = "") -> pd.DataFrame:
    """Owd_clocks lists the packet flows whose client and server ran on different hosts (CLOCK_COLUMNS).

    For each: the hosts (client to server, the direction of the one-way
    delay; a node without facts is on ``driver_host``), whether they share a
    clock (one kernel: no offset to measure), and the one-way delay's
    uncertainty in ms, the sum of the two offsets' (half the fastest round
    trip each, plus its launcher's for a node launched by another node; 0 for
    a node on the driver's clock).
    """
    by_id = {str(n.get("id")): n for n in nodes}

    def host(node_id: str) -> str:
        return str(by_id.get(node_id, {}).get("host") or driver_host)

    def same(node_id: str) -> bool:
        return bool(by_id.get(node_id, {}).get("same_clock", True))

    def uncertainty_ns(node_id: str, depth: int = 0) -> float:
        # A node launched by another node was measured against that one's clock,
        # whose own offset's error adds to its (clock.relative_to adds the offsets).
        n = by_id.get(node_id, {})
        if same(node_id) or depth > len(by_id):
            return 0.0
        parent = str(n.get("parent") or "")
        own = float(n.get("clock_rtt_ns") or 0) / 2
        return own + (uncertainty_ns(parent, depth + 1) if parent in by_id else 0.0)

    rows = []
    for flow, ends in packet_info.groupby("flow", sort=True, observed=True):
        at_server = ends["server"].astype(bool)
        client, server = ends.loc[~at_server, "node_id"], ends.loc[at_server, "node_id"]
        if not len(client) or not len(server):
            continue
        c, sv = str(client.iloc[0]), str(server.iloc[0])
        if host(c) == host(sv):
            continue
        rows.append(
            (str(flow), host(c), host(sv), same(c) and same(sv), (uncertainty_ns(c) + uncertainty_ns(sv)) / 1e6)
        )
    return pd.DataFrame(rows, columns=CLOCK_COLUMNS)


def analyze_frames(
    stream_info: pd.DataFrame | None = None,
    stream_io: pd.DataFrame | None = None,
    tcp_info: pd.DataFrame | None = None,
    packet_info: pd.DataFrame | None = None,
    packet_io: pd.DataFrame | None = None,
    interval_s: float = 0.1,
) -> Analysis:
    """Analyze_frames is :func:`analyze` of tables in memory (e.g. a tree's items), not of a stored test.

    Each table has its stored schema's columns (antler.node.items.SCHEMAS),
    at least those analysis reads (a KeyError names a missing one); a missing
    table is empty. Without any info rows every end's times count from its
    own ``tinit``.
    """
    s_info, p_info = _info(stream_info, "stream_info"), _info(packet_info, "packet_info")
    t0 = _t0(s_info, p_info)
    if t0 is None and not _rows(stream_io) and not _rows(packet_io):
        return _no_flows()
    t0 = t0 if t0 is not None else _EPOCH
    stream_flows, goodput = analyze_streams(
        s_info, _frame_table(stream_io, "stream_io", STREAM_IO_READ),
        _frame_table(tcp_info, "tcp_info", TCP_INFO_READ), t0, interval_s,
    )  # fmt: skip
    packet_flows, rtt, owd = analyze_packets(p_info, _frame_table(packet_io, "packet_io", PACKET_IO_READ), t0)
    return _combine(stream_flows, packet_flows, goodput, rtt, owd, t0)


def stream_flows(
    stream_info: pd.DataFrame | None, stream_io: pd.DataFrame, tcp_info: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Stream_flows is the per-flow metrics of stream flows from tables in memory (columns as in flows.parquet)."""
    return _kind_flows(analyze_frames(stream_info=stream_info, stream_io=stream_io, tcp_info=tcp_info), "stream")


def packet_flows(packet_info: pd.DataFrame | None, packet_io: pd.DataFrame) -> pd.DataFrame:
    """Packet_flows is the per-flow metrics of packet flows from tables in memory.

    Beyond the columns of flows.parquet it has ``server_received``: the
    distinct seqs the server received (NaN where the server recorded nothing),
    so for an echo flow ``sent - server_received`` is the loss on the way up.
    """
    p_info = _info(packet_info, "packet_info")
    t0 = _t0(None, p_info)
    flows, _, _ = analyze_packets(
        p_info, _frame_table(packet_io, "packet_io", PACKET_IO_READ), t0 if t0 is not None else _EPOCH
    )
    if flows.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in [*FLOW_COLUMNS, "server_received"]})
    extra = [c for c in flows.columns if c not in FLOW_COLUMNS]
    return _columns(flows)[[*FLOW_COLUMNS, *extra]] if extra else _columns(flows)


def arrival_counts(seq: np.ndarray) -> tuple[int, int, int, int]:
    """Arrival_counts is (received, duplicates, late, early) of one flow's seqs in order of arrival.

    The definitions are those of flows.parquet (see :func:`count_arrivals`).
    """
    seq = np.asarray(seq, dtype=np.int64)
    c = count_arrivals(np.zeros(len(seq), np.int64), np.arange(len(seq), dtype=np.int64), seq, 1)
    return int(c["received"][0]), int(c["duplicates"][0]), int(c["late"][0]), int(c["early"][0])


STREAM_IO_READ = ["flow", "server", "t_ns", "total_bytes", "sent"]
"""STREAM_IO_READ are the stream_io columns analysis reads."""
TCP_INFO_READ = ["flow", "server", "rtt_us", "total_retrans"]
"""TCP_INFO_READ are the tcp_info columns analysis reads (of the fields the sender samples, sock.TCP_INFO_COLUMNS)."""
PACKET_IO_READ = ["flow", "server", "t_ns", "seq", "length", "flags", "sent"]
"""PACKET_IO_READ are the packet_io columns analysis reads (``sched_t_ns`` too where present)."""
_EPOCH = pd.Timestamp(0, tz="UTC")


def _t0(stream_info: pd.DataFrame | None, packet_info: pd.DataFrame | None) -> pd.Timestamp | None:
    """_t0 is the test's start: the earliest tinit of any flow end (None without any)."""
    tinits = [i["tinit"].min() for i in (stream_info, packet_info) if i is not None and len(i)]
    return min(tinits) if tinits else None


def _rows(df: pd.DataFrame | None) -> int:
    return 0 if df is None else len(df)


def _no_flows() -> Analysis:
    return Analysis(flows=pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in FLOW_COLUMNS}))


def _info(df: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    """_info is an info table in memory with tinit as UTC timestamps (empty when None)."""
    if df is None or df.empty:
        return SCHEMAS[kind].empty_table().to_pandas()
    return df.assign(tinit=pd.to_datetime(df["tinit"], utc=True))


def _frame_table(df: pd.DataFrame | None, kind: str, columns: list[str]) -> pa.Table:
    """_frame_table is a table in memory as Arrow: the columns analysis reads, plus sched_t_ns if present."""
    schema = SCHEMAS[kind]
    names = columns + (["sched_t_ns"] if df is not None and "sched_t_ns" in df.columns else [])
    sub = pa.schema([schema.field(n) for n in names])
    if df is None or df.empty:
        return sub.empty_table()
    return pa.Table.from_pandas(df[names], schema=sub, preserve_index=False)


def _kind_flows(a: Analysis, kind: str) -> pd.DataFrame:
    return a.flows[a.flows["kind"] == kind].reset_index(drop=True)


def _columns(flows: pd.DataFrame) -> pd.DataFrame:
    """_columns adds the FLOW_COLUMNS a kind of flow lacks (NaN; "" for status and error)."""
    for c in FLOW_COLUMNS:
        if c not in flows.columns:
            flows[c] = "" if c in ("status", "error") else np.nan
    return flows


def _combine(
    stream_flows: pd.DataFrame,
    packet_flows: pd.DataFrame,
    goodput: pd.DataFrame,
    rtt: pd.DataFrame,
    owd: pd.DataFrame,
    t0: pd.Timestamp,
) -> Analysis:
    parts = [f for f in (stream_flows, packet_flows) if len(f)]
    if not parts:
        return _no_flows()
    flows = (
        _columns(pd.concat(parts, ignore_index=True))[FLOW_COLUMNS]
        .sort_values(["start_s", "flow"], kind="stable")
        .reset_index(drop=True)
    )
    return Analysis(flows=flows, goodput=goodput, rtt=rtt, owd=owd, t0=t0)


def _optional(test: TestResult, kind: str, columns: list[str]) -> list[str]:
    """_optional lists which of the optional columns the stored table has."""
    path = test.path / f"{kind}.parquet"
    names = pq.read_schema(path).names if path.exists() else test.arrow(kind).schema.names
    return [c for c in columns if c in names]


def _dtype(column: str) -> str:
    return "object" if column in ("flow", "kind", "direction", "cca", "status", "error") else "float64"


def _read(test: TestResult, kind: str, columns: list[str]) -> pa.Table:
    """_read reads the columns of a table that analysis needs, flow IDs dictionary-encoded."""
    path = test.path / f"{kind}.parquet"
    if path.exists():
        return pq.read_table(path, columns=columns, read_dictionary=["flow"])
    return test.arrow(kind).select(columns)
