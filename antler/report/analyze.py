"""Analysis of a test's stored measurements: per-flow metrics and the charts' time series.

Everything here is columnar (numpy over Arrow columns, pandas group-bys): no
Python loop ever runs per sample, so ten million packet records analyse in
about the time it takes to read them (see bench/analyze.py).

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.results.tables import TestResult

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

SEQ_BITS = 40
"""SEQ_BITS is how many bits of a join key a packet's seq takes (flow index above them)."""
TIME_BITS = 50
"""TIME_BITS is how many bits of a sort key a time in ns takes (13 days; longer tests sort more slowly)."""


CLOCK_COLUMNS = ["flow", "from_host", "to_host", "same_clock", "uncertainty_ms"]
"""CLOCK_COLUMNS are the columns of :attr:`Analysis.clocks`."""


@dataclass
class Analysis:
    """Analysis is a test's per-flow metrics and the time series its charts draw."""

    flows: pd.DataFrame
    goodput: pd.DataFrame = field(default_factory=lambda: _empty_series("goodput_mbps"))
    rtt: pd.DataFrame = field(default_factory=lambda: _empty_series("rtt_ms"))
    owd: pd.DataFrame = field(default_factory=lambda: _empty_series("owd_ms"))
    t0: pd.Timestamp | None = None
    clocks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CLOCK_COLUMNS))
    """clocks has, per packet flow whose ends ran on two hosts, the hosts and how uncertain its one-way delay is."""

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


def _empty_series(value: str) -> pd.DataFrame:
    return pd.DataFrame({"flow": pd.Categorical([]), "t_s": pd.Series(dtype=float), value: pd.Series(dtype=float)})


def analyze(test: TestResult, interval_s: float = 0.1) -> Analysis:
    """Analyze computes the flow metrics and series of one stored test.

    ``interval_s`` is the goodput interval: each point is the goodput between
    the last receiver samples of consecutive intervals.
    """
    nodes = test.meta.get("nodes") or []
    stream_info = on_driver_clock(test["stream_info"], nodes)
    packet_info = on_driver_clock(test["packet_info"], nodes)
    t0 = _t0(stream_info, packet_info)
    if t0 is None:
        return _no_flows()
    stream_io = _read(test, "stream_io", STREAM_IO_COLUMNS)
    tcp_info = _read(test, "tcp_info", TCP_INFO_COLUMNS)
    stream_flows, goodput = _streams(stream_info, stream_io, tcp_info, t0, interval_s)
    del stream_io
    packet_cols = PACKET_IO_COLUMNS + _optional(test, "packet_io", ["sched_t_ns"])
    packet_flows, rtt, owd = _packets(packet_info, _read(test, "packet_io", packet_cols), t0)
    a = _combine(stream_flows, packet_flows, goodput, rtt, owd, t0)
    a.clocks = owd_clocks(packet_info, nodes, (test.meta.get("host") or {}).get("hostname", ""))
    return a


def on_driver_clock(info: pd.DataFrame, nodes: list[dict[str, Any]]) -> pd.DataFrame:
    """On_driver_clock moves each flow end's ``tinit`` from its node's clock onto the driver's.

    ``nodes`` is meta.json's list of node facts; a node's ``clock_offset_ns``
    is its clock minus the driver's. Ends on nodes without one (the driver's
    own, or a launcher that measures none) are left as they are.
    """
    offsets = {str(n.get("id")): int(n.get("clock_offset_ns") or 0) for n in nodes}
    if not len(info) or not any(offsets.values()):
        return info
    shift = info["node_id"].astype(str).map(offsets).fillna(0).astype("int64")
    return info.assign(tinit=info["tinit"] - pd.to_timedelta(shift, unit="ns"))


def owd_clocks(packet_info: pd.DataFrame, nodes: list[dict[str, Any]], driver_host: str = "") -> pd.DataFrame:
    """Owd_clocks lists the packet flows whose client and server ran on different hosts.

    For each: the hosts (client to server, the direction of the one-way
    delay), whether they share a clock (one kernel: no offset to measure),
    and the one-way delay's uncertainty in ms, the sum of the two offsets'
    (half the fastest round trip each; 0 for a node on the driver's clock).
    """
    by_id = {str(n.get("id")): n for n in nodes}

    def host(node_id: str) -> str:
        return str(by_id.get(node_id, {}).get("host") or driver_host)

    def uncertainty_ns(node_id: str) -> float:
        n = by_id.get(node_id, {})
        return 0.0 if n.get("same_clock", True) else float(n.get("clock_rtt_ns") or 0) / 2

    def same(node_id: str) -> bool:
        return bool(by_id.get(node_id, {}).get("same_clock", True))

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

    Each table has its stored schema's columns (antler.node.items.SCHEMAS);
    a missing table is empty. Without any info rows every end's times count
    from its own ``tinit``.
    """
    s_info, p_info = _info(stream_info, "stream_info"), _info(packet_info, "packet_info")
    t0 = _t0(s_info, p_info)
    if t0 is None and not _rows(stream_io) and not _rows(packet_io):
        return _no_flows()
    t0 = t0 if t0 is not None else _EPOCH
    stream_flows, goodput = _streams(
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
"""Kinds of packet_io rows (see _split)."""
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


class _Ends:
    """_Ends maps (flow index, server) to the end's offset from the test start, in ns."""

    def __init__(self, info: pd.DataFrame, flows: list[str], t0: pd.Timestamp) -> None:
        self.offset = np.zeros((len(flows), 2), dtype=np.int64)
        self.known = np.zeros((len(flows), 2), dtype=bool)
        index = {f: i for i, f in enumerate(flows)}
        for flow, server, tinit in zip(info["flow"], info["server"], info["tinit"], strict=True):
            i = index.get(flow)
            if i is not None:
                self.offset[i, int(server)] = (tinit - t0).value
                self.known[i, int(server)] = True

    def at(self, code: np.ndarray, server: np.ndarray) -> np.ndarray:
        """At returns the offset of each row's end."""
        return self.offset[code, server.astype(np.int64)]


def _flows(table: pa.Table, known: pd.Series) -> list[str]:
    """_flows is the sorted list of flows: the info's and every flow the table has rows of."""
    col = table.column("flow")
    if pa.types.is_dictionary(col.type):
        # Read dictionary-encoded: each chunk's small dictionary, never the rows' strings.
        names = {str(f) for chunk in col.chunks for f in chunk.dictionary.to_pylist()}
    else:
        names = {str(f) for f in pc.unique(col).to_pylist()}
    return sorted(set(known) | names)


class _Part:
    """_Part is the rows of one kind (e.g. the client's sends), grouped by flow, each flow's in stored order.

    ``count`` is each flow's number of rows, ``code`` each row's flow (an
    index into the sorted flows); the columns are numpy arrays of the rows.
    """

    def __init__(self, n: int, count: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        self.count = count
        self.columns = columns
        self.code = np.repeat(np.arange(n, dtype=np.int64), count)
        self.start = np.concatenate([[0], np.cumsum(count)])
        self._flows = np.flatnonzero(count)  # the flows with rows

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def shift(self, name: str, per_flow: np.ndarray) -> np.ndarray:
        """Shift adds each flow's value to its rows of a column, in place (the part's arrays are its own)."""
        out = self.columns[name]
        for f in self._flows:
            out[self.start[f] : self.start[f + 1]] += per_flow[f]
        return out

    def extremes(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Extremes is each flow's smallest and largest value, as floats (NaN for a flow without rows)."""
        lo = np.full(len(self.count), np.nan)
        hi = np.full(len(self.count), np.nan)
        if len(self._flows):
            starts = self.start[self._flows]  # a flow's rows run to the next non-empty flow's start
            lo[self._flows] = np.minimum.reduceat(values, starts)
            hi[self._flows] = np.maximum.reduceat(values, starts)
        return lo, hi


def _split(table: pa.Table, flows: list[str], by: list[str], want: dict[int, list[str]]) -> dict[int, _Part]:
    """_split sorts a table's rows into kinds, and each kind's by flow, keeping stored order within a flow.

    A row's kind is the number its boolean ``by`` columns spell, the first
    the highest bit (by server and sent: 0 client receives, 1 client sends,
    2 server receives, 3 server sends). Only the kinds and columns in
    ``want`` are kept.

    The recorder ships rows in batches of one flow, end and direction, and
    the store keeps them in order, so a batch read back is one such run or a
    few: each run is sliced out whole, never gathered row by row (and no
    array is built over the whole table: fresh memory is slow, the kernel
    must first fault it in). Rows interleaved one by one (e.g. a table built
    in memory) are split by a stable sort of their small keys instead.
    """
    n = len(flows)
    index = {f: i for i, f in enumerate(flows)}
    pieces: dict[int, list[tuple[int, int, dict[str, np.ndarray]]]] = {k: [] for k in want}
    for batch in table.to_batches():
        rows = batch.num_rows
        if not rows:
            continue
        code = _batch_codes(batch.column("flow"), index, flows)
        flags = [batch.column(name) for name in by]
        groups: list[tuple[int, slice | np.ndarray]]
        if code[0] == code.min() == code.max() and all(f.null_count == 0 and f.true_count in (0, rows) for f in flags):
            kind = 0
            for f in flags:
                kind = 2 * kind + int(f.true_count > 0)
            groups = [(kind * n + int(code[0]), slice(0, rows))]
        else:
            key = np.zeros(rows, np.int64)
            for f in flags:
                key = 2 * key + f.to_numpy(zero_copy_only=False)
            key = key * n + code
            cut = (np.flatnonzero(key[1:] != key[:-1]) + 1).tolist()
            if len(cut) <= rows // 256:
                groups = [(int(key[a]), slice(a, b)) for a, b in zip([0, *cut], [*cut, rows], strict=True)]
            else:
                order = np.argsort(key.astype(np.int16) if key.max() < (1 << 15) else key, kind="stable")
                k = key[order]
                starts = run_starts(k)
                groups = [(int(k[a]), order[a:b]) for a, b in zip(starts, np.append(starts[1:], rows), strict=True)]
        arrays: dict[str, np.ndarray] = {}  # the batch's columns as numpy, each converted once
        for key_, sel in groups:
            kind, c = divmod(key_, n)
            names = want.get(kind)
            if names is None:
                continue
            for name in names:
                if name not in arrays:
                    arrays[name] = batch.column(name).to_numpy(zero_copy_only=False)
            columns = {name: arrays[name][sel] for name in names}
            size = sel.stop - sel.start if isinstance(sel, slice) else len(sel)
            pieces[kind].append((c, size, columns))
    parts = {}
    for kind, names in want.items():
        got = sorted(pieces[kind], key=lambda p: p[0])  # stable: stored order within a flow
        count = np.bincount([p[0] for p in got], weights=[p[1] for p in got], minlength=n).astype(np.int64)
        columns = {name: np.concatenate([p[2][name] for p in got]) if got else np.zeros(0, np.int64) for name in names}
        parts[kind] = _Part(n, count, columns)
    return parts


def _batch_codes(col: pa.Array, index: dict[str, int], flows: list[str]) -> np.ndarray:
    """_batch_codes is each row's flow as an index into flows (which has every flow of the batch)."""
    if pa.types.is_dictionary(col.type):
        lookup = np.array([index[str(f)] for f in col.dictionary.to_pylist()] or [0], np.int64)
        return lookup[col.indices.to_numpy(zero_copy_only=False)]
    return pc.index_in(col, value_set=pa.array(flows, pa.string())).to_numpy(zero_copy_only=False).astype(np.int64)


def _read(test: TestResult, kind: str, columns: list[str]) -> pa.Table:
    """_read reads the columns of a table that analysis needs, flow IDs dictionary-encoded."""
    path = test.path / f"{kind}.parquet"
    if path.exists():
        return pq.read_table(path, columns=columns, read_dictionary=["flow"])
    return test.arrow(kind).select(columns)


def _order(code: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """_order returns the permutation sorting rows by flow, then time (stable); None if they are in order.

    One stable argsort of a packed key: records arrive nearly sorted, which
    numpy's stable sort (timsort) exploits; lexsort does not.
    """
    if len(t) < 2 or (is_sorted(code) and _sorted_runs(code, t)):
        return None
    if t.min() >= 0 and t.max() < (1 << TIME_BITS):
        return _argsort_by_flow_first((code << TIME_BITS) | t, code)
    return np.lexsort((t, code))


def _sorted_runs(code: np.ndarray, t: np.ndarray) -> bool:
    """_sorted_runs reports whether t ascends within each run of equal codes (booleans only, no packed keys)."""
    ok = t[1:] >= t[:-1]
    if ok.all():
        return True
    ok |= code[1:] != code[:-1]
    return bool(ok.all())


def _take(order: np.ndarray | None, *arrays: np.ndarray) -> list[np.ndarray]:
    """_take returns the arrays in the order (unchanged, not copied, when order is None)."""
    return list(arrays) if order is None else [a[order] for a in arrays]


def _argsort_by_flow_first(packed: np.ndarray, code: np.ndarray) -> np.ndarray:
    """_Argsort_by_flow_first is the stable argsort of packed keys whose high bits are the flow code.

    Flows interleave in batches but each flow's keys come in order, so a
    radix sort by flow (stable, linear) usually leaves the keys sorted, or in
    runs that timsort merges cheaply.
    """
    if not len(code) or code.min() < 0 or code.max() >= (1 << 15):
        return np.argsort(packed, kind="stable")
    by_flow = np.argsort(code.astype(np.int16), kind="stable")
    p = packed[by_flow]
    return by_flow if is_sorted(p) else by_flow[np.argsort(p, kind="stable")]


def run_starts(a: np.ndarray) -> np.ndarray:
    """Run_starts is the index of the first element of each run of equal values (empty for an empty array)."""
    return np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]])) if len(a) else np.zeros(0, np.int64)


def is_sorted(a: np.ndarray, strict: bool = False) -> bool:
    """Is_sorted reports whether a is in ascending order (one pass: no sort is cheaper than a fast sort)."""
    if len(a) < 2:
        return True
    return bool(np.all(a[1:] > a[:-1]) if strict else np.all(a[1:] >= a[:-1]))


def _streams(
    info: pd.DataFrame, io: pa.Table, tcp: pa.Table, t0: pd.Timestamp, interval_s: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    flows = _flows(io, info["flow"])
    if not flows:
        return pd.DataFrame(), _empty_series("goodput_mbps")
    ends = _Ends(info, flows, t0)
    parts = _split(io, flows, ["sent"], {0: ["server", "t_ns", "total_bytes"], 1: ["server", "t_ns"]})
    rx, tx = parts[0], parts[1]
    rt = ends.at(rx.code, rx["server"]) + rx["t_ns"]
    # Ordered by time within each flow: still grouped as rx is, so rx's per-flow helpers apply.
    rcode, rt, rtotal = _take(_order(rx.code, rt), rx.code, rt, rx["total_bytes"])

    # Per flow: bytes received, and when the last byte arrived (first time the
    # cumulative count reached its maximum).
    n = len(flows)
    nbytes = np.nan_to_num(rx.extremes(rtotal)[1]).astype(np.int64)
    reached = rtotal >= nbytes[rcode]
    t_done = np.full(n, np.nan)
    if reached.any():
        first_done = pd.Series(rt[reached]).groupby(rcode[reached]).min()
        t_done[first_done.index.to_numpy()] = first_done.to_numpy()
    t_first_rx = rx.extremes(rt)[0]
    t_first_tx = tx.extremes(ends.at(tx.code, tx["server"]) + tx["t_ns"])[0]

    flow_info = _flow_info(info, flows)
    # The sender is the client of an upload and the server of a download.
    send_end = (flow_info["direction"] == "down").to_numpy(dtype=np.int64)
    recv_end = 1 - send_end
    rows = np.arange(n)
    client_known = ends.known[:, 0]
    fallback = np.where(~np.isnan(t_first_tx), t_first_tx, np.where(client_known, ends.offset[:, 0], t_first_rx))
    # The flow starts when its sender began (its tinit): first byte sent to
    # last byte received is the flow completion time.
    start = np.where(ends.known[rows, send_end], ends.offset[rows, send_end], fallback)
    # Goodput is the receiver's: bytes read over its time from its start to
    # the last byte, as iperf3's receiver figure.
    recv_start = np.where(ends.known[rows, recv_end], ends.offset[rows, recv_end], start)
    duration_s = (t_done - recv_start) / 1e9
    with np.errstate(divide="ignore", invalid="ignore"):
        goodput = np.where(duration_s > 0, nbytes * 8 / duration_s / 1e6, np.nan)
    fct_s = (t_done - start) / 1e9
    length_col = next((c for c in ("length_bytes", "length") if c in flow_info.columns), None)
    if length_col is not None:
        # Where the info records the configured length, FCT applies only to
        # length-limited flows that received all of it; without it (older
        # results) every flow gets one.
        length = flow_info[length_col].to_numpy(dtype=float)
        fct_s = np.where((length > 0) & (nbytes >= length), fct_s, np.nan)

    out = pd.DataFrame(
        {
            "flow": flows,
            "kind": "stream",
            "direction": flow_info["direction"].to_numpy(),
            "cca": flow_info["cca"].to_numpy(),
            "start_s": start / 1e9,
            "bytes": nbytes.astype(float),
            "duration_s": duration_s,
            "goodput_mbps": goodput,
            "fct_s": fct_s,
        }
    )
    out = out.join(_tcp_metrics(tcp, flows, flow_info), on="flow")
    series = _goodput_series(rcode, rt, rtotal, ends, flows, interval_s)
    return out, series


def _group_quantiles(code: np.ndarray, values: np.ndarray, n: int, q: list[float]) -> np.ndarray:
    """_group_quantiles is an (n, len(q)) array of each flow's quantiles (linear, as pandas'); NaN without rows."""
    out = np.full((n, len(q)), np.nan)
    if not len(code):
        return out
    if is_sorted(code):
        c, v = code, values  # grouped by flow already (see _split)
    else:
        # A stable sort of small integers is a radix sort: linear, unlike a group-by.
        small = code.astype(np.int16) if n < (1 << 15) else code
        order = np.argsort(small, kind="stable")
        c, v = code[order], values[order]
    starts = run_starts(c)
    for a, b in zip(starts, np.append(starts[1:], len(c)), strict=True):
        out[c[a]] = np.quantile(v[a:b], q)  # one call per flow, never per sample
    return out


def _flow_info(info: pd.DataFrame, flows: list[str]) -> pd.DataFrame:
    """_flow_info returns one info row per flow, the client's where both ends reported."""
    if info.empty:
        return pd.DataFrame({"direction": "", "cca": ""}, index=flows)
    ordered = info.sort_values("server", kind="stable")  # client (False) first
    first = ordered.drop_duplicates("flow").set_index("flow")
    return first.reindex(flows).fillna({"direction": "", "cca": ""})


def _goodput_series(
    code: np.ndarray, t: np.ndarray, total: np.ndarray, ends: _Ends, flows: list[str], interval_s: float
) -> pd.DataFrame:
    """_goodput_series is the goodput between the last receiver samples of consecutive intervals.

    Using the samples' own times (not the interval edges) keeps the rate exact
    when samples and intervals do not line up; the first point counts from the
    receiving end's start with zero bytes.
    """
    if not len(code):
        return _empty_series("goodput_mbps")
    interval_ns = max(int(interval_s * 1e9), 1)
    b = t // interval_ns
    last = np.ones(len(code), bool)
    last[:-1] = (code[1:] != code[:-1]) | (b[1:] != b[:-1])
    pc_, pt, ptotal = code[last], t[last], total[last]
    first = np.ones(len(pc_), bool)
    first[1:] = pc_[1:] != pc_[:-1]
    prev_t = np.empty_like(pt)
    prev_total = np.empty_like(ptotal)
    prev_t[1:], prev_total[1:] = pt[:-1], ptotal[:-1]
    # The receiving end of each flow started at its tinit (server for up, client for down).
    rx_start = np.where(ends.known[pc_, 1], ends.offset[pc_, 1], ends.offset[pc_, 0])
    prev_t[first] = np.minimum(rx_start[first], pt[first])
    prev_total[first] = 0
    dt = (pt - prev_t).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mbps = (ptotal - prev_total) * 8e3 / dt
    keep = dt > 0
    return pd.DataFrame(
        {"flow": _flow_column(pc_[keep], flows), "t_s": pt[keep] / 1e9, "goodput_mbps": mbps[keep]}, copy=False
    )


def _tcp_metrics(tcp: pa.Table, flows: list[str], flow_info: pd.DataFrame) -> pd.DataFrame:
    """_tcp_metrics is each stream flow's RTT percentiles and retransmits from the sender's TCP_INFO."""
    cols = ["rtt_ms_median", "rtt_ms_p99", "retrans"]
    if tcp.num_rows == 0:
        return pd.DataFrame(columns=cols, index=pd.Index(flows, name="flow"), dtype=float)
    df = tcp.select(["flow", "server", "rtt_us", "total_retrans"]).to_pandas()
    # The sender is the server for a download, the client for an upload.
    sender_is_server = (flow_info["direction"] == "down").reindex(df["flow"]).to_numpy(dtype=bool)
    df = df[(df["server"].to_numpy() == sender_is_server) & (df["rtt_us"] > 0)]
    g = df.groupby("flow")
    out = pd.DataFrame(
        {
            "rtt_ms_median": g["rtt_us"].median() / 1e3,
            "rtt_ms_p99": g["rtt_us"].quantile(0.99) / 1e3,
            "retrans": g["total_retrans"].max().astype(float),
        }
    )
    return out.reindex(pd.Index(flows, name="flow"))


def _packets(info: pd.DataFrame, io: pa.Table, t0: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    flows = _flows(io, info["flow"])
    if not flows:
        return pd.DataFrame(), _empty_series("rtt_ms"), _empty_series("owd_ms")
    n = len(flows)
    ends = _Ends(info, flows, t0)
    flow_names = np.array(flows, dtype=object)
    sched = [c for c in ("sched_t_ns",) if c in io.column_names]
    parts = _split(
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
        echoed = _gather(from_client, crx_c, crx_t, crx_s)
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


def _send_errors(tx: _Part, n: int) -> np.ndarray:
    """_send_errors is each flow's median and p99 send-time error in µs (sent minus scheduled)."""
    err_us = (tx["t_ns"] - tx["sched_t_ns"]) / 1e3
    # A send without its schedule (null, NaN here) has no error: pandas' quantiles skipped it too.
    has = ~np.isnan(err_us)
    c, e = (tx.code, err_us) if has.all() else _gather(has, tx.code, err_us)
    return _group_quantiles(c, e, n, [0.5, 0.99])


def _gather(mask: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """_gather returns the rows of each column where mask is set."""
    idx = np.flatnonzero(mask)
    return [c[idx] for c in columns]


def _first_by_key(key: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_first_by_key returns the sorted distinct keys and the earliest time of each."""
    if is_sorted(key, strict=True):
        return key, t  # distinct and in order already: a single flow's sends, typically
    order = _argsort_by_flow_first(key, key >> SEQ_BITS)
    k, tt = key[order], t[order]
    starts = run_starts(k)
    return k[starts], np.minimum.reduceat(tt, starts)


def _seq_layout(code: np.ndarray, seq: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """_seq_layout lays out a table indexed by (flow, seq): each flow's highest seq and where its slots start.

    None when a table does not pay: no rows, negative seqs, or seqs so sparse
    that the table would hold over four slots a row (then callers sort).
    """
    if not len(code) or seq.min() < 0:
        return None
    max_seq = np.full(n, -1, np.int64)
    np.maximum.at(max_seq, code, seq)
    base = np.concatenate([[0], np.cumsum(max_seq + 1)])
    return (max_seq, base) if base[-1] <= 4 * len(code) + 1024 else None


NEVER = np.iinfo(np.int64).max
"""NEVER marks an empty slot of a (flow, seq) table."""


def _smallest(size: int, slot: np.ndarray, values: np.ndarray) -> np.ndarray:
    """_smallest is a table of size slots holding each slot's smallest value (NEVER where no row falls)."""
    out = np.full(size, NEVER, np.int64)
    np.minimum.at(out, slot, values)
    return out


class _Sends:
    """_Sends is the client's sends by (flow, seq), built once for both the RTT and the one-way delay series.

    Seqs are dense in practice (0, 1, 2, ... per flow), so the sends go into a
    table indexed by (flow, seq) holding each packet's earliest send time:
    one scatter, linear time, no sort. Sparse or negative seqs instead get
    sorted distinct keys (see _first_by_key), built only then.
    """

    def __init__(self, code: np.ndarray, seq: np.ndarray, t: np.ndarray, n: int) -> None:
        self.code, self.seq, self.t = code, seq, t
        self.table: np.ndarray | None = None
        self._keys: tuple[np.ndarray, np.ndarray] | None = None
        layout = _seq_layout(code, seq, n)
        if layout is not None:
            self.max_seq, self.base = layout
            self.table = _smallest(self.base[-1], self.base[code] + seq, t)

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys returns the sorted distinct (flow << SEQ_BITS | seq) keys and the earliest send of each."""
        if self._keys is None:
            self._keys = _first_by_key((self.code << SEQ_BITS) | self.seq, self.t)
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
        return _empty_series(name)
    n = len(flows)
    if sends.table is not None and rx_seq.min() >= 0:
        slot, t = sends.base[rx_code] + rx_seq, rx_t
        ok = rx_seq <= sends.max_seq[rx_code]
        if not ok.all():
            slot, t = _gather(ok, slot, t)
        # The earliest arrival of each packet: duplicates are not delays.
        arrived = _smallest(sends.base[-1], slot, t)
        slot = np.flatnonzero((arrived != NEVER) & (sends.table != NEVER))
        # Slots ascend, flow by flow: each flow's count is where its table starts among them.
        code = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.searchsorted(slot, sends.base)))
        sent_t, got_t = sends.table[slot], arrived[slot]
    else:
        tx_key, tx_t = sends.keys()
        k, got = _first_by_key((rx_code << SEQ_BITS) | rx_seq, rx_t)
        i = np.minimum(np.searchsorted(tx_key, k), len(tx_key) - 1)
        hit = tx_key[i] == k
        code, sent_t, got_t = k[hit] >> SEQ_BITS, tx_t[i[hit]], got[hit]
    code, sent_t, got_t = _take(_order(code, sent_t), code, sent_t, got_t)
    delay = np.subtract(got_t, sent_t, out=got_t)  # got_t is this function's own gather
    # copy=False: no consolidating copy of millions of rows into one block.
    return pd.DataFrame({"flow": _flow_column(code, list(flows)), "t_s": sent_t / 1e9, name: delay / 1e6}, copy=False)


def _flow_column(code: np.ndarray, flows: list[str]) -> pd.Categorical[str]:
    """_flow_column is a series' flow column: categorical, as millions of repeated strings cost seconds."""
    return pd.Categorical.from_codes(code.astype(np.int64, copy=False), categories=pd.Index(flows))


def _arrivals(code: np.ndarray, t: np.ndarray, seq: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """_arrivals counts received, duplicate, late and early packets per flow.

    In arrival order, a packet is late if a higher seq arrived before it, and
    early if a lower seq arrives after it; duplicates (a seq seen again) count
    only as duplicates.
    """
    total = np.bincount(code, minlength=n)
    is_first = _first_arrivals(code, t, seq, n)
    fc, ft, fs = (code, t, seq) if is_first is None else _gather(is_first, code, t, seq)
    fc, fs = _take(_order(fc, ft), fc, fs)
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
    layout = _seq_layout(code, seq, n)
    if layout is not None:
        base = layout[1]
        slot = base[code] + seq
        first_t = _smallest(base[-1], slot, t)
        if np.count_nonzero(first_t != NEVER) == len(code):
            return None  # as many distinct (flow, seq) as rows
        # Ties (a duplicate in the same nanosecond) go to the earlier row.
        tied = np.flatnonzero(t == first_t[slot])
        first_row = _smallest(base[-1], slot[tied], tied)
        mark[first_row[first_row != NEVER]] = True
        return mark
    order = _order(code, t)
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
    q = _group_quantiles(flow.cat.codes.to_numpy(np.int64), series[value].to_numpy(float), len(names), [0.5, 0.99])
    return pd.DataFrame(q, index=names, columns=cols)
