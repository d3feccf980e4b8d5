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
    return out, series


def _flow_info(info: pd.DataFrame, flows: list[str]) -> pd.DataFrame:
    """_flow_info returns one info row per flow, the client's where both ends reported."""
    if info.empty:
        return pd.DataFrame({"direction": "", "cca": ""}, index=flows)
    ordered = info.sort_values("server", kind="stable")  # client (False) first
    first = ordered.drop_duplicates("flow").set_index("flow")
    return first.reindex(flows).fillna({"direction": "", "cca": ""})


def _goodput_series(
    code: np.ndarray, t: np.ndarray, total: np.ndarray, ends: Ends, flows: list[str], interval_s: float
) -> pd.DataFrame:
    """_goodput_series is the goodput between the last receiver samples of consecutive intervals.

    Using the samples' own times (not the interval edges) keeps the rate exact
    when samples and intervals do not line up; the first point counts from the
    server end's start (see below) with zero bytes. An interval in which
    nothing was delivered (see :func:`_idle_intervals`) is a point of zero
    goodput at its end, so a chart never draws a line across an outage.
    """
    if not len(code):
        return empty_series("goodput_mbps")
    interval_ns = max(int(interval_s * 1e9), 1)
    b = t // interval_ns
    last = np.ones(len(code), bool)
    last[:-1] = (code[1:] != code[:-1]) | (b[1:] != b[:-1])
    pc_, pt, ptotal = code[last], t[last], total[last]
    idle = _idle_intervals(code, t, total, interval_ns, len(flows))
    if idle is not None:
        # Idle intervals join the points with the byte count they stayed at:
        # the rate into them is 0, and the next point counts from their end.
        ic, it, itotal = idle
        order = np.lexsort((np.concatenate([pt, it]), np.concatenate([pc_, ic])))
        pc_, pt, ptotal = (np.concatenate(pair)[order] for pair in ((pc_, ic), (pt, it), (ptotal, itotal)))
    first = np.ones(len(pc_), bool)
    first[1:] = pc_[1:] != pc_[:-1]
    prev_t = np.empty_like(pt)
    prev_total = np.empty_like(ptotal)
    prev_t[1:], prev_total[1:] = pt[:-1], ptotal[:-1]
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
