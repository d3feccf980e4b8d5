"""Analysis of a test's stored measurements: per-flow metrics and the charts' time series.

Everything here is columnar (numpy over Arrow columns, pandas group-bys): no
Python loop ever runs per sample, so ten million packet records analyse in
about the time it takes to read them (see bench/analyze.py). This module is
the API; the flows table's columns (flows.parquet, each with its unit) are in
:mod:`.flows`, the stream metrics in :mod:`.streams`, the packet metrics in
:mod:`.packets`, the array toolkit both use in :mod:`.columnar`, the
flows' outcomes (status and error) in :mod:`.outcomes`, and the clocks of
flows across hosts in :mod:`.clocks`.

Times: every series' ``t_s`` is seconds since the test's first flow began (the
earliest ``tinit`` of any flow end), so stream and packet flows share one axis.
Each end's ``t_ns`` is relative to its own ``tinit``; adding the end's offset
from that start puts both ends on the test's clock. A ``tinit`` is by its
node's clock: on another host it is moved onto the driver's clock first, by
the node's measured offset (:mod:`.clocks`), and :attr:`Analysis.clocks` says
per flow how far a one-way delay between two hosts can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.report.analyze.clocks import CLOCK_COLUMNS, on_driver_clock, owd_clocks
from antler.report.analyze.columnar import empty_series
from antler.report.analyze.fairness import RECEIVED_COLUMNS, jain, received_curves
from antler.report.analyze.flows import FLOW_COLUMNS, column_dtype, fill_columns
from antler.report.analyze.outcomes import named_flows, with_outcomes
from antler.report.analyze.packets import analyze_packets, count_arrivals
from antler.report.analyze.queue import QUEUE_FLOW_COLUMNS, SERIES_COLUMNS, queue_flows, queue_series
from antler.report.analyze.streams import analyze_streams, default_interval_s, goodput_samples
from antler.report.analyze.summary import SUMMARY_COLUMNS, conclude
from antler.results.tables import TestResult

__all__ = [
    "CLOCK_COLUMNS",
    "FLOW_COLUMNS",
    "PACKET_IO_READ",
    "RECEIVED_COLUMNS",
    "STREAM_IO_READ",
    "SUMMARY_COLUMNS",
    "TCP_INFO_READ",
    "Analysis",
    "analyze",
    "analyze_frames",
    "arrival_counts",
    "jain",
    "on_driver_clock",
    "owd_clocks",
    "packet_flows",
    "stream_flows",
]


@dataclass
class Analysis:
    """A test's per-flow metrics and the time series its charts draw.

    ``flows`` has one row per flow, columns FLOW_COLUMNS (units and meanings
    in :mod:`.flows`), sorted by start_s, then flow. Each series has a row per sample,
    sorted by flow, then time: ``flow`` is categorical, ``t_s`` seconds since
    the test's start ``t0``.

    - ``goodput``: flow, t_s, goodput_mbps. Per stream flow, one point per
      goodput interval with receive samples: t_s is the interval's last
      receive sample, goodput_mbps the bytes received since the previous
      point in Mbit/s (for the first, since the server end's tinit, else
      the client's); and a point of 0 at the end of each interval in which
      certainly nothing was delivered (an outage), so nothing is
      interpolated across it. Where the sender sampled TCP_INFO about once
      per interval or more often, the bytes are instead those it counted
      delivered (acknowledged plus SACKed), at its samples: data that
      arrived behind a hole counts when it arrived, not when the receiver
      could read it (see :func:`.streams._delivery_series`).
    - ``rtt``: flow, t_s, rtt_ms. Per packet that asked for an echo: t_s its
      first send, rtt_ms its first echo's arrival minus that send, in ms, or
      NaN when no echo came (a break in a line chart; in flows that got any
      echo at all).
    - ``owd``: flow, t_s, owd_ms. Per packet sent: t_s its first send,
      owd_ms its first arrival at the server minus that send, in ms, or NaN
      when it never arrived (in flows whose server recorded any arrival).

    ``goodput_interval_s`` is the goodput series' interval (seconds), and
    ``goodput_samples`` the raw rate between consecutive receiver samples
    (same columns; see :func:`.streams.goodput_samples`), which after a loss
    can lie far above the link rate.

    ``t0`` is the test's start, the earliest ``tinit`` of any flow end (UTC;
    None without flows; the Unix epoch for tables in memory without info rows).
    ``received`` (RECEIVED_COLUMNS: flow, t_s, bytes) is each stream
    receiver's running byte count, from (its start, 0); the common window,
    shares and fairness are taken from it (:mod:`.fairness`). ``summary``
    is the test's one row of summary.parquet (SUMMARY_COLUMNS, then any
    ``share_<cca>``; :mod:`.summary`).
    ``clocks`` has a row per packet flow whose ends ran on two hosts
    (CLOCK_COLUMNS, see :func:`owd_clocks`). ``queue`` is the bottleneck
    queue over time, per flow and interval (SERIES_COLUMNS, see
    :mod:`.queue`; empty without queue.parquet or qdisc.parquet).
    """

    flows: pd.DataFrame
    goodput: pd.DataFrame = field(default_factory=lambda: empty_series("goodput_mbps"))
    rtt: pd.DataFrame = field(default_factory=lambda: empty_series("rtt_ms"))
    owd: pd.DataFrame = field(default_factory=lambda: empty_series("owd_ms"))
    t0: pd.Timestamp | None = None
    clocks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CLOCK_COLUMNS))
    received: pd.DataFrame = field(default_factory=lambda: empty_series("bytes"))
    summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUMMARY_COLUMNS, dtype=float))
    queue: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SERIES_COLUMNS))
    goodput_interval_s: float = 0.1
    goodput_samples: pd.DataFrame = field(default_factory=lambda: empty_series("goodput_mbps"))

    def delay(self, kind: str = "rtt") -> pd.DataFrame:
        """Return the RTT or one-way delay series as columns flow, t_s, delay_ms.

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


def analyze(test: TestResult, interval_s: float | None = None) -> Analysis:
    """Compute the flow metrics and series of one stored test.

    ``interval_s`` is the goodput interval in seconds: each point is the
    goodput between the last receiver samples of consecutive intervals. By
    default it follows the path: four of the rig's RTTs (meta.json's
    ``rig.rtt_ms``), at least 100 ms (see :func:`.streams.default_interval_s`). A
    table the test lacks counts as empty; a stored table that cannot be read,
    or lacks a column analysis reads (see TCP_INFO_READ and its siblings),
    raises pyarrow's ArrowInvalid (a ValueError).
    """
    nodes = test.meta.get("nodes") or []
    if interval_s is None:
        interval_s = default_interval_s((test.meta.get("rig") or {}).get("rtt_ms"))
    stream_info = on_driver_clock(test["stream_info"], nodes)
    packet_info = on_driver_clock(test["packet_info"], nodes)
    t0 = _t0(stream_info, packet_info)
    if t0 is None:
        a = _no_flows()
    else:
        stream_io = _read(test, "stream_io", STREAM_IO_READ)
        tcp_info = _read(test, "tcp_info", TCP_INFO_READ + _all_or_none(test, "tcp_info", TCP_INFO_DELIVERY))
        stream_flows, goodput = analyze_streams(stream_info, stream_io, tcp_info, t0, interval_s)
        received = received_curves(stream_info, stream_io, t0)
        samples = goodput_samples(stream_io, stream_info, t0)
        del stream_io
        packet_cols = PACKET_IO_READ + _optional(test, "packet_io", ["sched_t_ns"])
        packet_flows, rtt, owd = analyze_packets(packet_info, _read(test, "packet_io", packet_cols), t0)
        a = _combine(stream_flows, packet_flows, goodput, rtt, owd, t0)
        a.received = received
        a.goodput_interval_s, a.goodput_samples = interval_s, samples
        a.clocks = owd_clocks(packet_info, nodes, (test.meta.get("host") or {}).get("hostname", ""))
        a.queue = queue_series(test, stream_info, packet_info, t0, interval_s)
        extra = queue_flows(test, stream_info, packet_info)
        if len(extra):
            a.flows = a.flows.drop(columns=QUEUE_FLOW_COLUMNS).merge(extra, on="flow", how="left")
    errors = test["errors"]
    first_error = str(errors.sort_values("time")["message"].iloc[0]) if len(errors) else ""
    flows = with_outcomes(
        a.flows,
        test["flow_status"],
        named_flows(test.meta.get("config") or {}),
        first_error,
        recorded=test.format_version >= 2,
    )
    a.flows = fill_columns(flows)[FLOW_COLUMNS].sort_values(["start_s", "flow"], kind="stable").reset_index(drop=True)
    return _conclude(a, test.meta)


def analyze_frames(
    stream_info: pd.DataFrame | None = None,
    stream_io: pd.DataFrame | None = None,
    tcp_info: pd.DataFrame | None = None,
    packet_info: pd.DataFrame | None = None,
    packet_io: pd.DataFrame | None = None,
    interval_s: float = 0.1,
) -> Analysis:
    """Return :func:`analyze` of tables in memory (e.g. a tree's items), not of a stored test.

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
    s_io = _frame_table(stream_io, "stream_io", STREAM_IO_READ)
    stream_flows, goodput = analyze_streams(
        s_info, s_io, _frame_table(tcp_info, "tcp_info", TCP_INFO_READ, TCP_INFO_DELIVERY), t0, interval_s,
    )  # fmt: skip
    packet_flows, rtt, owd = analyze_packets(p_info, _frame_table(packet_io, "packet_io", PACKET_IO_READ), t0)
    a = _combine(stream_flows, packet_flows, goodput, rtt, owd, t0)
    a.received = received_curves(s_info, _frame_table(stream_io, "stream_io", STREAM_IO_READ), t0)
    a.goodput_interval_s, a.goodput_samples = interval_s, goodput_samples(s_io, s_info, t0)
    return _conclude(a, {})


def stream_flows(
    stream_info: pd.DataFrame | None, stream_io: pd.DataFrame, tcp_info: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Return the per-flow metrics of stream flows from tables in memory (columns as in flows.parquet)."""
    return _kind_flows(analyze_frames(stream_info=stream_info, stream_io=stream_io, tcp_info=tcp_info), "stream")


def packet_flows(packet_info: pd.DataFrame | None, packet_io: pd.DataFrame) -> pd.DataFrame:
    """Return the per-flow metrics of packet flows from tables in memory.

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
        return pd.DataFrame({c: pd.Series(dtype=column_dtype(c)) for c in [*FLOW_COLUMNS, "server_received"]})
    extra = [c for c in flows.columns if c not in FLOW_COLUMNS]
    return fill_columns(flows)[[*FLOW_COLUMNS, *extra]] if extra else fill_columns(flows)


def arrival_counts(seq: np.ndarray) -> tuple[int, int, int, int]:
    """Return (received, duplicates, late, early) of one flow's seqs in order of arrival.

    The definitions are those of flows.parquet (see :func:`count_arrivals`).
    """
    seq = np.asarray(seq, dtype=np.int64)
    c = count_arrivals(np.zeros(len(seq), np.int64), np.arange(len(seq), dtype=np.int64), seq, 1)
    return int(c["received"][0]), int(c["duplicates"][0]), int(c["late"][0]), int(c["early"][0])


STREAM_IO_READ = ["flow", "server", "t_ns", "total_bytes", "sent"]
"""STREAM_IO_READ are the stream_io columns analysis reads."""
TCP_INFO_READ = ["flow", "server", "rtt_us", "total_retrans"]
"""TCP_INFO_READ are the tcp_info columns analysis reads (of the fields the sender samples, sock.TCP_INFO_COLUMNS)."""
TCP_INFO_DELIVERY = ["t_ns", "bytes_acked", "sacked", "snd_mss"]
"""TCP_INFO_DELIVERY are the tcp_info columns of the goodput series' delivery count, read where a table has them all
(``sacked`` is new in this release: older results draw the receiver's reads)."""
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
    return Analysis(flows=pd.DataFrame({c: pd.Series(dtype=column_dtype(c)) for c in FLOW_COLUMNS}))


def _info(df: pd.DataFrame | None, kind: str) -> pd.DataFrame:
    """_info is an info table in memory with tinit as UTC timestamps (empty when None)."""
    if df is None or df.empty:
        return SCHEMAS[kind].empty_table().to_pandas()
    return df.assign(tinit=pd.to_datetime(df["tinit"], utc=True))


def _frame_table(df: pd.DataFrame | None, kind: str, columns: list[str], together: list[str] | None = None) -> pa.Table:
    """_frame_table is a table in memory as Arrow: the columns analysis reads, plus sched_t_ns if present.

    ``together`` are optional columns taken only if the frame has them all.
    """
    schema = SCHEMAS[kind]
    names = columns + (["sched_t_ns"] if df is not None and "sched_t_ns" in df.columns else [])
    if together and df is not None and set(together) <= set(df.columns):
        names += together
    sub = pa.schema([schema.field(n) for n in names])
    if df is None or df.empty:
        return sub.empty_table()
    return pa.Table.from_pandas(df[names], schema=sub, preserve_index=False)


def _kind_flows(a: Analysis, kind: str) -> pd.DataFrame:
    return a.flows[a.flows["kind"] == kind].reset_index(drop=True)


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
        fill_columns(pd.concat(parts, ignore_index=True))[FLOW_COLUMNS]
        .sort_values(["start_s", "flow"], kind="stable")
        .reset_index(drop=True)
    )
    return Analysis(flows=flows, goodput=goodput, rtt=rtt, owd=owd, t0=t0)


def _conclude(a: Analysis, meta: dict) -> Analysis:
    """_conclude fills in the flows' shares and latency under load and makes the test's summary row."""
    flows, a.summary = conclude(a.flows, a.received, a.rtt, a.owd, meta)
    a.flows = flows[FLOW_COLUMNS]
    return a


def _optional(test: TestResult, kind: str, columns: list[str]) -> list[str]:
    """_optional lists which of the optional columns the stored table has."""
    path = test.path / f"{kind}.parquet"
    names = pq.read_schema(path).names if path.exists() else test.arrow(kind).schema.names
    return [c for c in columns if c in names]


def _all_or_none(test: TestResult, kind: str, columns: list[str]) -> list[str]:
    """_all_or_none is the columns if the stored table has every one of them, else none."""
    have = _optional(test, kind, columns)
    return columns if len(have) == len(columns) else []


def _read(test: TestResult, kind: str, columns: list[str]) -> pa.Table:
    """_read reads the columns of a table that analysis needs, flow IDs dictionary-encoded."""
    path = test.path / f"{kind}.parquet"
    if path.exists():
        return pq.read_table(path, columns=columns, read_dictionary=["flow"])
    return test.arrow(kind).select(columns)
