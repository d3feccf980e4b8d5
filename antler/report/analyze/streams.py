"""Stream metrics: each TCP flow's bytes, goodput, completion time, RTT and retransmits, and its goodput series.

A stream end samples its running byte count (``stream_io``: total_bytes,
with ``sent`` true on the sending end), and the sending socket its TCP_INFO
(``tcp_info``). The flow's metrics are the receiver's: bytes read, and the
time the last of them arrived; RTT and retransmits are the sender's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from antler.report.analyze.columnar import (
    Ends,
    empty_series,
    flow_column,
    flow_time_order,
    sorted_flows,
    split_parts,
    take,
)


def analyze_streams(
    info: pd.DataFrame, io: pa.Table, tcp: pa.Table, t0: pd.Timestamp, interval_s: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the stream flows' rows of flows.parquet and their goodput series.

    ``info`` is the stream_info rows (tinit as UTC timestamps), ``io`` the
    stream_io columns flow, server, t_ns, total_bytes and sent, ``tcp`` the
    tcp_info columns flow, server, rtt_us and total_retrans; ``t0`` is the
    test's start and ``interval_s`` the goodput interval in seconds. The rows
    have the stream columns of FLOW_COLUMNS, one per flow in flow order; the
    series has columns flow, t_s, goodput_mbps. Without any flow both are
    empty (the rows without columns).
    """
    flows = sorted_flows(io, info["flow"])
    if not flows:
        return pd.DataFrame(), empty_series("goodput_mbps")
    ends = Ends(info, flows, t0)
    parts = split_parts(io, flows, ["sent"], {0: ["server", "t_ns", "total_bytes"], 1: ["server", "t_ns"]})
    rx, tx = parts[0], parts[1]
    rt = ends.at(rx.code, rx["server"]) + rx["t_ns"]
    # Ordered by time within each flow: still grouped as rx is, so rx's per-flow helpers apply.
    rcode, rt, rtotal = take(flow_time_order(rx.code, rt), rx.code, rt, rx["total_bytes"])

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
    delivered = _delivery_series(tcp, ends, flows, send_end, interval_s)
    if len(delivered):
        series = pd.concat([series[~series["flow"].isin(delivered["flow"].unique())], delivered], ignore_index=True)
        series = series.sort_values(["flow", "t_s"], kind="stable").reset_index(drop=True)
    return out, series


def _delivery_series(
    tcp: pa.Table, ends: Ends, flows: list[str], send_end: np.ndarray, interval_s: float
) -> pd.DataFrame:
    """Return the goodput series of the flows whose sender sampled TCP_INFO at least once per interval.

    The bytes that reached the receiver by a sample are what the sender's
    TCP_INFO counts as delivered: ``bytes_acked`` (cumulatively acknowledged)
    plus ``sacked`` segments of ``snd_mss`` bytes (selectively acknowledged,
    RFC 2018: arrived, but held back behind a hole). Counted so, the data
    that arrives during a loss's recovery is in the interval it arrived in;
    the receiver's reads put it in the one after, at once (issue 30: a
    50 Mbit/s link read 132 Mbit/s per 100 ms, this counts at most 48.5).
    Points are at the last sample of each interval, as the receiver's are
    (:func:`_goodput_series`). A flow sampled more sparsely than the interval
    (``tcp_info_interval`` over 1.5 intervals), or results without these columns, keep
    the receiver's series. Columns flow, t_s, goodput_mbps.
    """
    cols = ["t_ns", "bytes_acked", "sacked", "snd_mss"]
    if tcp.num_rows == 0 or not set(cols) <= set(tcp.schema.names):
        return empty_series("goodput_mbps")
    codes, times, totals = [], [], []
    for end, part in split_parts(tcp, flows, ["server"], {0: cols, 1: cols}).items():
        sender = send_end[part.code] == end  # the client of an upload, the server of a download
        code = part.code[sender]
        codes.append(code)
        times.append(ends.offset[code, end] + part["t_ns"][sender].astype(np.int64))
        acked, sacked, mss = (part[c][sender].astype(np.int64) for c in cols[1:])
        totals.append(acked + sacked * mss)
    code, t, total = (np.concatenate(a) for a in (codes, times, totals))
    code, t, total = take(flow_time_order(code, t), code, t, total)
    # Only flows sampled about once per interval or more often: the median
    # spacing of their samples within 1.5 intervals (a 100 ms timer's samples
    # land 100.2 ms apart; the rate stays exact over a bin with no sample).
    spacing = pd.Series(t).groupby(code).diff().groupby(code).median()
    ok = (spacing <= 1.5 * interval_s * 1e9).reindex(range(len(flows)), fill_value=False).to_numpy(dtype=bool)[code]
    if not ok.any():
        return empty_series("goodput_mbps")
    return _goodput_series(code[ok], t[ok], total[ok], ends, flows, interval_s, idle=False)


def goodput_samples(io: pa.Table, info: pd.DataFrame, t0: pd.Timestamp) -> pd.DataFrame:
    """Return the raw goodput: the rate between each two consecutive receiver samples (columns flow, t_s, goodput_mbps).

    This is what the receiver read, at its own sample interval and with the
    jitter of its reads (a read that empties a full socket buffer, a sample
    timer late by a few ms), so a point can lie above the link rate; there is
    no zero in an outage, only a long span to the next sample. The charts
    draw the binned series (:func:`analyze_streams`) and keep these one click
    away.
    """
    flows = sorted_flows(io, info["flow"])
    if not flows:
        return empty_series("goodput_mbps")
    ends = Ends(info, flows, t0)
    rx = split_parts(io, flows, ["sent"], {0: ["server", "t_ns", "total_bytes"], 1: ["server", "t_ns"]})[0]
    rt = ends.at(rx.code, rx["server"]) + rx["t_ns"]
    rcode, rt, rtotal = take(flow_time_order(rx.code, rt), rx.code, rt, rx["total_bytes"])
    return _goodput_series(rcode, rt, rtotal, ends, flows, 1e-9, idle=False)


def default_interval_s(rtt_ms: float | None) -> float:
    """Return the goodput interval a reader can trust on a path of base RTT ``rtt_ms``: 4 RTTs, at least 100 ms.

    A receiver reads in bursts: after a loss the data held back behind the
    hole arrives at once, a stall of about an RTT under load. Over an
    interval of several RTTs such a burst averages out with the stall before
    it; under 100 ms the intervals are shorter than the sample timers' own
    jitter. Rounded up to 1, 2 or 5 times a power of ten (ms) so the chart's
    name for it reads plainly.
    """
    want_ms = max(100.0, 4 * rtt_ms) if rtt_ms and rtt_ms > 0 else 100.0
    scale = 10 ** np.floor(np.log10(want_ms))
    step = next(m for m in (1, 2, 5, 10) if m * scale >= want_ms - 1e-9)
    return float(step * scale / 1000)


def _flow_info(info: pd.DataFrame, flows: list[str]) -> pd.DataFrame:
    """_flow_info returns one info row per flow, the client's where both ends reported."""
    if info.empty:
        return pd.DataFrame({"direction": "", "cca": ""}, index=flows)
    ordered = info.sort_values("server", kind="stable")  # client (False) first
    first = ordered.drop_duplicates("flow").set_index("flow")
    return first.reindex(flows).fillna({"direction": "", "cca": ""})


def _goodput_series(
    code: np.ndarray,
    t: np.ndarray,
    total: np.ndarray,
    ends: Ends,
    flows: list[str],
    interval_s: float,
    idle: bool = True,
) -> pd.DataFrame:
    """Return the goodput between the last receiver samples of consecutive intervals.

    Using the samples' own times (not the interval edges) keeps the rate exact
    when samples and intervals do not line up; the first point counts from the
    server end's start (see below) with zero bytes. With ``idle``, an interval
    in which nothing was delivered (see :func:`_idle_intervals`) is a point of
    zero goodput at its end, so a chart never draws a line across an outage;
    the point after such intervals counts from the last delivery before them,
    not from their end: what the receiver reads then is mostly what the
    network delivered during the stall and TCP held back behind a hole
    (issue 30: counted from the stall's end, a 50 Mbit/s link showed 153).
    """
    if not len(code):
        return empty_series("goodput_mbps")
    interval_ns = max(int(interval_s * 1e9), 1)
    b = t // interval_ns
    last = np.ones(len(code), bool)
    last[:-1] = (code[1:] != code[:-1]) | (b[1:] != b[:-1])
    pc_, pt, ptotal = code[last], t[last], total[last]
    gaps = _idle_intervals(code, t, total, interval_ns, len(flows)) if idle else None
    is_idle = np.zeros(len(pc_), bool)
    if gaps is not None:
        # Idle intervals join the points with the byte count they stayed at:
        # the rate into them is 0.
        ic, it, itotal = gaps
        order = np.lexsort((np.concatenate([pt, it]), np.concatenate([pc_, ic])))
        pc_, pt, ptotal = (np.concatenate(pair)[order] for pair in ((pc_, ic), (pt, it), (ptotal, itotal)))
        is_idle = np.concatenate([is_idle, np.ones(len(ic), bool)])[order]
    first = np.ones(len(pc_), bool)
    first[1:] = pc_[1:] != pc_[:-1]
    # Each point counts from the point before it, but a delivery after idle
    # intervals from the last delivery before them (the idle points carry
    # that delivery's byte count, so only the time differs).
    real = np.where(~is_idle, np.arange(len(pc_)), -1)
    last_real = np.maximum.accumulate(real)
    prev = np.arange(len(pc_)) - 1
    after_idle = ~is_idle & np.concatenate([[False], is_idle[:-1]])
    before = np.concatenate([[-1], last_real[:-1]])
    prev[after_idle] = before[after_idle]
    prev = np.maximum(prev, 0)
    prev_t, prev_total = pt[prev], ptotal[prev]
    # A point counting from before its flow began (no delivery since it
    # started) is that flow's first, handled below.
    first |= pc_[prev] != pc_
    # The first point counts from the server end's tinit, else the client's:
    # the receiver's start for an upload, but the sender's for a download
    # (duration_s, in analyze_streams, takes the receiver's either way).
    rx_start = np.where(ends.known[pc_, 1], ends.offset[pc_, 1], ends.offset[pc_, 0])
    prev_t[first] = np.minimum(rx_start[first], pt[first])
    prev_total[first] = 0
    dt = (pt - prev_t).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mbps = (ptotal - prev_total) * 8e3 / dt
    keep = dt > 0
    return pd.DataFrame(
        {"flow": flow_column(pc_[keep], flows), "t_s": pt[keep] / 1e9, "goodput_mbps": mbps[keep]}, copy=False
    )


def _idle_intervals(
    code: np.ndarray, t: np.ndarray, total: np.ndarray, interval_ns: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """_idle_intervals finds the goodput intervals in which a stream delivered nothing: (flow code, end ns, bytes so far).

    The receiver samples its byte count at the first read at least
    ``sample_io_interval`` after its last sample, so between consecutive
    samples a and b no byte was read after ``t_a + sample_io_interval``. The
    interval is not stored, but it is at most the flow's shortest spacing of
    samples (its last sample aside, which the end of the flow forces), so an
    interval lying wholly within ``(t_a + shortest spacing, t_b)`` certainly
    had no delivery. Rows are sorted by flow, then time. None when there is
    no such interval.
    """
    if len(code) < 3:
        return None
    same = code[1:] == code[:-1]
    gap = t[1:] - t[:-1]
    # The pair that ends a flow's samples is left out of its shortest spacing.
    ends_flow = np.ones(len(code) - 1, bool)
    ends_flow[:-1] = code[2:] != code[1:-1]
    spacing = np.full(n, np.iinfo(np.int64).max, np.int64)
    usable = same & ~ends_flow & (gap > 0)
    np.minimum.at(spacing, code[:-1][usable], gap[usable])
    start = t[:-1] + np.minimum(spacing[code[:-1]], np.iinfo(np.int64).max - t[:-1])
    first = -(-start // interval_ns)  # the first interval that begins at or after start
    stop = t[1:] // interval_ns  # intervals before the one t_b falls in end at or before it
    count = np.where(same & (stop > first), stop - first, 0)
    if not count.any():
        return None
    pair = np.repeat(np.arange(len(count)), count)
    offset = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    k = first[pair] + offset
    return code[:-1][pair], (k + 1) * interval_ns, total[:-1][pair]


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
