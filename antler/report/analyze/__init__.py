"""Analysis of a test's stored measurements: per-flow metrics and the charts' time series.

Everything here is columnar (numpy over Arrow columns, pandas group-bys): no
Python loop ever runs per sample, so ten million packet records analyse in
about the time it takes to read them (see bench/analyze.py).

Times: every series' ``t_s`` is seconds since the test's first flow began (the
earliest ``tinit`` of any flow end), so stream and packet flows share one axis.
Each end's ``t_ns`` is relative to its own ``tinit``; adding the end's offset
from that start puts both ends on the test's clock (one-way delay across nodes
is only as good as their clock sync, as in antler).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from antler.node.items import SCHEMAS
from antler.report.analyze.columnar import (
    NEVER,
    SEQ_BITS,
    Ends,
    Part,
    empty_series,
    first_by_key,
    flow_column,
    flow_time_order,
    gather,
    group_quantiles,
    scatter_min,
    seq_layout,
    sorted_flows,
    split_parts,
    take,
)

# charts.py imported these two from here before the package split; they stay
# importable here, but their home is .columnar.
from antler.report.analyze.columnar import is_sorted as is_sorted
from antler.report.analyze.columnar import run_starts as run_starts
from antler.report.analyze.streams import analyze_streams
from antler.results.load import TestResult

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
]
"""FLOW_COLUMNS are the columns of ``flows.parquet``, in order (NaN where a metric does not apply)."""


@dataclass
class Analysis:
    """Analysis is a test's per-flow metrics and the time series its charts draw."""

    flows: pd.DataFrame
    goodput: pd.DataFrame = field(default_factory=lambda: empty_series("goodput_mbps"))
    rtt: pd.DataFrame = field(default_factory=lambda: empty_series("rtt_ms"))
    owd: pd.DataFrame = field(default_factory=lambda: empty_series("owd_ms"))
    t0: pd.Timestamp | None = None

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

    ``interval_s`` is the goodput interval: each point is the goodput between
    the last receiver samples of consecutive intervals.
    """
    stream_info = test["stream_info"]
    packet_info = test["packet_info"]
    t0 = _t0(stream_info, packet_info)
    if t0 is None:
        return _no_flows()
    stream_io = _read(test, "stream_io", STREAM_IO_COLUMNS)
    tcp_info = _read(test, "tcp_info", TCP_INFO_COLUMNS)
    stream_flows, goodput = analyze_streams(stream_info, stream_io, tcp_info, t0, interval_s)
    del stream_io
    packet_cols = PACKET_IO_COLUMNS + _optional(test, "packet_io", ["sched_t_ns"])
    packet_flows, rtt, owd = _packets(packet_info, _read(test, "packet_io", packet_cols), t0)
    return _combine(stream_flows, packet_flows, goodput, rtt, owd, t0)


def analyze_frames(
    stream_info: pd.DataFrame | None = None,
    stream_io: pd.DataFrame | None = None,
    tcp_info: pd.DataFrame | None = None,
    packet_info: pd.DataFrame | None = None,
    packet_io: pd.DataFrame | None = None,
    interval_s: float = 0.1,
) -> Analysis:
    """Analyze_frames is :func:`analyze` of tables in memory (e.g. a tree's items), not of a stored test.

    Each table has its stored schema's columns (antler.node.items.SCHEMAS);
    a missing table is empty. Without any info rows every end's times count
    from its own ``tinit``.
    """
    s_info, p_info = _info(stream_info, "stream_info"), _info(packet_info, "packet_info")
    t0 = _t0(s_info, p_info)
    if t0 is None and not _rows(stream_io) and not _rows(packet_io):
        return _no_flows()
    t0 = t0 if t0 is not None else _EPOCH
    stream_flows, goodput = analyze_streams(
        s_info, _frame_table(stream_io, "stream_io", STREAM_IO_COLUMNS),
        _frame_table(tcp_info, "tcp_info", TCP_INFO_COLUMNS), t0, interval_s,
    )  # fmt: skip
    packet_flows, rtt, owd = _packets(p_info, _frame_table(packet_io, "packet_io", PACKET_IO_COLUMNS), t0)
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
    flows, _, _ = _packets(
        p_info, _frame_table(packet_io, "packet_io", PACKET_IO_COLUMNS), t0 if t0 is not None else _EPOCH
    )
    if flows.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in [*FLOW_COLUMNS, "server_received"]})
    extra = [c for c in flows.columns if c not in FLOW_COLUMNS]
    return _columns(flows)[[*FLOW_COLUMNS, *extra]] if extra else _columns(flows)


def arrival_counts(seq: np.ndarray) -> tuple[int, int, int, int]:
    """Arrival_counts is (received, duplicates, late, early) of one flow's seqs in order of arrival.

    The definitions are those of flows.parquet (see :func:`_arrivals`).
    """
    seq = np.asarray(seq, dtype=np.int64)
    c = _arrivals(np.zeros(len(seq), np.int64), np.arange(len(seq), dtype=np.int64), seq, 1)
    return int(c["received"][0]), int(c["duplicates"][0]), int(c["late"][0]), int(c["early"][0])


_CLIENT_RECEIVES, _CLIENT_SENDS, _SERVER_RECEIVES = 0, 1, 2
"""Kinds of packet_io rows (see split_parts)."""
STREAM_IO_COLUMNS = ["flow", "server", "t_ns", "total_bytes", "sent"]
"""STREAM_IO_COLUMNS are the stream_io columns analysis reads."""
TCP_INFO_COLUMNS = ["flow", "server", "rtt_us", "total_retrans"]
"""TCP_INFO_COLUMNS are the tcp_info columns analysis reads."""
PACKET_IO_COLUMNS = ["flow", "server", "t_ns", "seq", "length", "sent"]
"""PACKET_IO_COLUMNS are the packet_io columns analysis reads (``sched_t_ns`` too where present)."""
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
    """_columns adds the FLOW_COLUMNS a kind of flow lacks (NaN)."""
    for c in FLOW_COLUMNS:
        if c not in flows.columns:
            flows[c] = np.nan
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
    return "object" if column in ("flow", "kind", "direction", "cca") else "float64"


def _read(test: TestResult, kind: str, columns: list[str]) -> pa.Table:
    """_read reads the columns of a table that analysis needs, flow IDs dictionary-encoded."""
    path = test.path / f"{kind}.parquet"
    if path.exists():
        return pq.read_table(path, columns=columns, read_dictionary=["flow"])
    return test.arrow(kind).select(columns)


def _packets(info: pd.DataFrame, io: pa.Table, t0: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    flows = sorted_flows(io, info["flow"])
    if not flows:
        return pd.DataFrame(), empty_series("rtt_ms"), empty_series("owd_ms")
    n = len(flows)
    ends = Ends(info, flows, t0)
    flow_names = np.array(flows, dtype=object)
    sched = [c for c in ("sched_t_ns",) if c in io.column_names]
    parts = split_parts(
        io, flows, ["server", "sent"],
        {_CLIENT_SENDS: ["t_ns", "seq", "length", *sched], _SERVER_RECEIVES: ["t_ns", "seq"], _CLIENT_RECEIVES: ["t_ns", "seq"]},
    )  # fmt: skip
    # Each kind is one end's, so its times go on the test's clock with that end's offset.
    tx, srx, crx = parts[_CLIENT_SENDS], parts[_SERVER_RECEIVES], parts[_CLIENT_RECEIVES]
    tx_c, tx_s, tx_len = tx.code, tx["seq"], tx["length"]
    # The send-time error is a difference on the sender's own clock: taken before its times shift.
    send_err = _send_errors(tx, n) if sched else None
    tx_t_all = tx.shift("t_ns", ends.offset[:, 0])
    srx_c, srx_s = srx.code, srx["seq"]
    srx_t = srx.shift("t_ns", ends.offset[:, 1])
    crx_c, crx_s = crx.code, crx["seq"]
    crx_t = crx.shift("t_ns", ends.offset[:, 0])

    n_sent = tx.count
    n_bytes = np.bincount(tx_c, weights=tx_len, minlength=n)
    sends = _Sends(tx_c, tx_s, tx_t_all, n)
    t_first_tx, t_last_tx = tx.extremes(tx_t_all)

    # Loss and order are counted where the packets arrive: at the server when
    # it recorded them, otherwise (a server on a node that does not report) at
    # the client from the echoes.
    at_server = srx.count > 0
    from_client = ~at_server[crx_c]
    arrived: list[np.ndarray] = [srx_c, srx_t, srx_s]
    if from_client.any():
        echoed = gather(from_client, crx_c, crx_t, crx_s)
        arrived = [np.concatenate([a, b]) for a, b in zip(arrived, echoed, strict=True)]
    counts = _arrivals(arrived[0], arrived[1], arrived[2], n)

    rtt = _delay_series(sends, crx_c, crx_s, crx_t, flow_names, "rtt_ms")
    owd = _delay_series(sends, srx_c, srx_s, srx_t, flow_names, "owd_ms")

    start = np.where(~np.isnan(t_first_tx), t_first_tx, np.where(ends.known[:, 0], ends.offset[:, 0], np.nan))
    lost = np.clip(n_sent - counts["received"], 0, None).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_pct = np.where(n_sent > 0, 100.0 * lost / n_sent, np.nan)
    out = pd.DataFrame(
        {
            "flow": flows,
            "kind": "packet",
            "direction": "",
            "cca": "",
            "start_s": start / 1e9,
            "bytes": n_bytes,
            "duration_s": (t_last_tx - t_first_tx) / 1e9,
            "sent": n_sent.astype(float),
            "received": counts["received"].astype(float),
            "lost": lost,
            "loss_pct": loss_pct,
            "duplicates": counts["duplicates"].astype(float),
            "late": counts["late"].astype(float),
            "early": counts["early"].astype(float),
            # Where the server recorded arrivals they are what was counted above.
            "server_received": np.where(at_server, counts["received"], np.nan),
        }
    )
    out = out.join(_percentiles(rtt, "rtt_ms"), on="flow").join(_percentiles(owd, "owd_ms"), on="flow")
    if send_err is not None:
        out["send_err_us_median"], out["send_err_us_p99"] = send_err[:, 0], send_err[:, 1]
        # As the group-by join this replaced left it: flows.parquet's flow column stays a plain string.
        out["flow"] = out["flow"].astype(object)
    return out, rtt, owd


def _send_errors(tx: Part, n: int) -> np.ndarray:
    """_send_errors is each flow's median and p99 send-time error in µs (sent minus scheduled)."""
    err_us = (tx["t_ns"] - tx["sched_t_ns"]) / 1e3
    # A send without its schedule (null, NaN here) has no error: pandas' quantiles skipped it too.
    has = ~np.isnan(err_us)
    c, e = (tx.code, err_us) if has.all() else gather(has, tx.code, err_us)
    return group_quantiles(c, e, n, [0.5, 0.99])


class _Sends:
    """_Sends is the client's sends by (flow, seq), built once for both the RTT and the one-way delay series.

    Seqs are dense in practice (0, 1, 2, ... per flow), so the sends go into a
    table indexed by (flow, seq) holding each packet's earliest send time:
    one scatter, linear time, no sort. Sparse or negative seqs instead get
    sorted distinct keys (see first_by_key), built only then.
    """

    def __init__(self, code: np.ndarray, seq: np.ndarray, t: np.ndarray, n: int) -> None:
        self.code, self.seq, self.t = code, seq, t
        self.table: np.ndarray | None = None
        self._keys: tuple[np.ndarray, np.ndarray] | None = None
        layout = seq_layout(code, seq, n)
        if layout is not None:
            self.max_seq, self.base = layout
            self.table = scatter_min(self.base[-1], self.base[code] + seq, t)

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys returns the sorted distinct (flow << SEQ_BITS | seq) keys and the earliest send of each."""
        if self._keys is None:
            self._keys = first_by_key((self.code << SEQ_BITS) | self.seq, self.t)
        return self._keys


def _delay_series(
    sends: _Sends, rx_code: np.ndarray, rx_seq: np.ndarray, rx_t: np.ndarray, flows: np.ndarray, name: str
) -> pd.DataFrame:
    """_delay_series pairs each packet's first arrival with its send, by flow and seq.

    With dense seqs the pairing is a scatter into the sends' (flow, seq)
    table: linear time. Sparse or negative seqs fall back to a sort and a
    binary search.
    """
    if not len(rx_code) or not len(sends.code):
        return empty_series(name)
    n = len(flows)
    if sends.table is not None and rx_seq.min() >= 0:
        slot, t = sends.base[rx_code] + rx_seq, rx_t
        ok = rx_seq <= sends.max_seq[rx_code]
        if not ok.all():
            slot, t = gather(ok, slot, t)
        # The earliest arrival of each packet: duplicates are not delays.
        arrived = scatter_min(sends.base[-1], slot, t)
        slot = np.flatnonzero((arrived != NEVER) & (sends.table != NEVER))
        # Slots ascend, flow by flow: each flow's count is where its table starts among them.
        code = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.searchsorted(slot, sends.base)))
        sent_t, got_t = sends.table[slot], arrived[slot]
    else:
        tx_key, tx_t = sends.keys()
        k, got = first_by_key((rx_code << SEQ_BITS) | rx_seq, rx_t)
        i = np.minimum(np.searchsorted(tx_key, k), len(tx_key) - 1)
        hit = tx_key[i] == k
        code, sent_t, got_t = k[hit] >> SEQ_BITS, tx_t[i[hit]], got[hit]
    code, sent_t, got_t = take(flow_time_order(code, sent_t), code, sent_t, got_t)
    delay = np.subtract(got_t, sent_t, out=got_t)  # got_t is this function's own gather
    # copy=False: no consolidating copy of millions of rows into one block.
    return pd.DataFrame({"flow": flow_column(code, list(flows)), "t_s": sent_t / 1e9, name: delay / 1e6}, copy=False)


def _arrivals(code: np.ndarray, t: np.ndarray, seq: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """_arrivals counts received, duplicate, late and early packets per flow.

    In arrival order, a packet is late if a higher seq arrived before it, and
    early if a lower seq arrives after it; duplicates (a seq seen again) count
    only as duplicates.
    """
    total = np.bincount(code, minlength=n)
    is_first = _first_arrivals(code, t, seq, n)
    fc, ft, fs = (code, t, seq) if is_first is None else gather(is_first, code, t, seq)
    fc, fs = take(flow_time_order(fc, ft), fc, fs)
    fk = (fc << SEQ_BITS) | fs
    received = np.bincount(fc, minlength=n)
    late = np.zeros(n, np.int64)
    early = np.zeros(n, np.int64)
    if len(fc):
        # Keys grow with the flow index, so running max/min over the packed
        # keys never cross from one flow into the next in a way that counts.
        prev_max = np.empty_like(fk)  # the highest key before each
        prev_max[0] = -1
        np.maximum.accumulate(fk[:-1], out=prev_max[1:])
        next_min = np.empty_like(fk)  # the lowest key after each
        next_min[-1] = np.iinfo(np.int64).max
        np.minimum.accumulate(fk[:0:-1], out=next_min[-2::-1])
        late = np.bincount(fc[np.flatnonzero(fk < prev_max)], minlength=n)
        early = np.bincount(fc[np.flatnonzero(fk > next_min)], minlength=n)
    return {"received": received, "duplicates": total - received, "late": late, "early": early}


def _first_arrivals(code: np.ndarray, t: np.ndarray, seq: np.ndarray, n: int) -> np.ndarray | None:
    """_first_arrivals marks the earliest arrival of each (flow, seq); duplicates stay unmarked.

    None means every row is a first arrival (no duplicates: the usual case).
    With dense seqs this is two scatters into a (flow, seq) table (linear
    time); otherwise a stable sort by arrival, then by key.
    """
    if not len(code):
        return None
    mark = np.zeros(len(code), bool)
    layout = seq_layout(code, seq, n)
    if layout is not None:
        base = layout[1]
        slot = base[code] + seq
        first_t = scatter_min(base[-1], slot, t)
        if np.count_nonzero(first_t != NEVER) == len(code):
            return None  # as many distinct (flow, seq) as rows
        # Ties (a duplicate in the same nanosecond) go to the earlier row.
        tied = np.flatnonzero(t == first_t[slot])
        first_row = scatter_min(base[-1], slot[tied], tied)
        mark[first_row[first_row != NEVER]] = True
        return mark
    order = flow_time_order(code, t)
    if order is None:
        order = np.arange(len(code))
    key = ((code << SEQ_BITS) | seq)[order]
    by_key = np.argsort(key, kind="stable")  # keeps arrival order within a key
    head = np.ones(len(key), bool)
    head[1:] = key[by_key][1:] != key[by_key][:-1]
    mark[order[by_key[head]]] = True
    return mark


def _percentiles(series: pd.DataFrame, value: str) -> pd.DataFrame:
    """_percentiles is the median and 99th percentile of a series per flow (NaN for a flow without samples)."""
    prefix = value.removesuffix("_ms")
    cols = [f"{prefix}_ms_median", f"{prefix}_ms_p99"]
    if series.empty:
        return pd.DataFrame(columns=cols, dtype=float)
    flow = series["flow"].astype("category")
    names = flow.cat.categories
    q = group_quantiles(flow.cat.codes.to_numpy(np.int64), series[value].to_numpy(float), len(names), [0.5, 0.99])
    return pd.DataFrame(q, index=names, columns=cols)
