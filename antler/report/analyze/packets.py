"""Packet metrics: each packet flow's sends, arrivals, loss, order, RTT, one-way delay and send-time error.

Each packet_io row is one packet sent or received at one end; by ``server``
and ``sent`` a row is a client send, a server receive, a server echo, or a
client receive (of an echo). Loss and order are counted where the packets
arrive: at the server when it recorded them, otherwise at the client from
the echoes. Packets pair with their sends by (flow, seq): RTT from the
client's echo receipts, one-way delay from the server's receipts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

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

_CLIENT_RECEIVES, _CLIENT_SENDS, _SERVER_RECEIVES, _SERVER_SENDS = 0, 1, 2, 3
ECHO_FLAG = 1
"""ECHO_FLAG is the packet flag bit of a request that asks for an echo (antler.node.runners.packet.wire.ECHO)."""
"""Kinds of packet_io rows (see split_parts)."""


def analyze_packets(
    info: pd.DataFrame, io: pa.Table, t0: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the packet flows' rows of flows.parquet and their RTT and one-way delay series.

    ``info`` is the packet_info rows (tinit as UTC timestamps), ``io`` the
    packet_io columns flow, server, t_ns, seq, length and sent (and
    sched_t_ns where present), ``t0`` the test's start. The rows have the
    packet columns of FLOW_COLUMNS (the send-time error only with
    sched_t_ns) plus ``server_received``, one per flow in flow order; the
    series have columns flow, t_s, rtt_ms and flow, t_s, owd_ms. Without
    any flow the rows are empty (without columns) and so are the series.
    """
    flows = sorted_flows(io, info["flow"])
    if not flows:
        return pd.DataFrame(), empty_series("rtt_ms"), empty_series("owd_ms")
    n = len(flows)
    ends = Ends(info, flows, t0)
    flow_names = np.array(flows, dtype=object)
    sched = [c for c in ("sched_t_ns",) if c in io.column_names]
    parts = split_parts(
        io, flows, ["server", "sent"],
        {_CLIENT_SENDS: ["t_ns", "seq", "length", "flags", *sched], _SERVER_RECEIVES: ["t_ns", "seq"],
         _CLIENT_RECEIVES: ["t_ns", "seq"], _SERVER_SENDS: ["seq"]},
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
    counts = count_arrivals(arrived[0], arrived[1], arrived[2], n)

    # An RTT is expected of each send that asked for an echo; a one-way delay of every send.
    rtt = _delay_series(sends, crx_c, crx_s, crx_t, flow_names, "rtt_ms", (tx["flags"] & ECHO_FLAG) != 0)
    owd = _delay_series(sends, srx_c, srx_s, srx_t, flow_names, "owd_ms")

    start = np.where(~np.isnan(t_first_tx), t_first_tx, np.where(ends.known[:, 0], ends.offset[:, 0], np.nan))
    lost = np.clip(n_sent - counts["received"], 0, None).astype(float)
    # Per direction, as irtt reports it: up is the requests that never reached
    # the server (known where it recorded arrivals), down the replies it sent
    # that never reached the client (known where it recorded its replies).
    replied = parts[_SERVER_SENDS]
    n_replies = distinct_per_flow(replied.code, replied["seq"], n)
    n_replies_back = distinct_per_flow(crx_c, crx_s, n)
    lost_up = np.where(at_server, np.clip(n_sent - counts["received"], 0, None), np.nan)
    lost_down = np.where(replied.count > 0, np.clip(n_replies - n_replies_back, 0, None), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss_pct = np.where(n_sent > 0, 100.0 * lost / n_sent, np.nan)
        loss_up_pct = np.where(n_sent > 0, 100.0 * lost_up / n_sent, np.nan)
        loss_down_pct = np.where(n_replies > 0, 100.0 * lost_down / n_replies, np.nan)
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
            "lost_up": lost_up,
            "loss_up_pct": loss_up_pct,
            "lost_down": lost_down,
            "loss_down_pct": loss_down_pct,
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


def distinct_per_flow(code: np.ndarray, seq: np.ndarray, n: int) -> np.ndarray:
    """Count each flow's distinct seqs (length n): a (flow, seq) table when seqs are dense, else a sort."""
    if not len(code):
        return np.zeros(n, np.int64)
    layout = seq_layout(code, seq, n)
    if layout is not None:
        _, base = layout
        seen = np.zeros(base[-1], bool)
        seen[base[code] + seq] = True
        # Each flow's slots run from base[f] to base[f + 1]: count the marks in each.
        marks = np.concatenate([[0], np.cumsum(seen)])
        return (marks[base[1:]] - marks[base[:-1]]).astype(np.int64)
    keys = np.unique((code << SEQ_BITS) | seq)
    return np.bincount(keys >> SEQ_BITS, minlength=n).astype(np.int64)


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
        """Return the sorted distinct (flow << SEQ_BITS | seq) keys and the earliest send of each."""
        if self._keys is None:
            self._keys = first_by_key((self.code << SEQ_BITS) | self.seq, self.t)
        return self._keys


def _delay_series(
    sends: _Sends,
    rx_code: np.ndarray,
    rx_seq: np.ndarray,
    rx_t: np.ndarray,
    flows: np.ndarray,
    name: str,
    expected: np.ndarray | None = None,
) -> pd.DataFrame:
    """_delay_series pairs each packet's first arrival with its send, by flow and seq.

    A send that was expected to arrive (every send, or those ``expected``
    marks, one bool per send row) and never did is a row too, with a NaN
    delay at its send time, in the flows where anything arrived at all: a
    line drawn through the series breaks there instead of joining the delays
    on either side of an outage.

    With dense seqs the pairing is a scatter into the sends' (flow, seq)
    table: linear time. Sparse or negative seqs fall back to a sort and a
    binary search.
    """
    if not len(rx_code) or not len(sends.code):
        return empty_series(name)
    n = len(flows)
    has_rx = np.bincount(rx_code, minlength=n) > 0
    wanted = has_rx[sends.code] if expected is None else has_rx[sends.code] & expected
    if sends.table is not None and rx_seq.min() >= 0:
        slot, t = sends.base[rx_code] + rx_seq, rx_t
        ok = rx_seq <= sends.max_seq[rx_code]
        if not ok.all():
            slot, t = gather(ok, slot, t)
        # The earliest arrival of each packet: duplicates are not delays.
        arrived = scatter_min(sends.base[-1], slot, t)
        # A slot is drawn if its packet arrived, or was expected to and did not (a NaN).
        drawn = np.zeros(sends.base[-1], bool)
        drawn[sends.base[sends.code[wanted]] + sends.seq[wanted]] = True
        drawn |= arrived != NEVER
        drawn &= sends.table != NEVER
        slot = np.flatnonzero(drawn)
        # Slots ascend, flow by flow (and seq by seq, so in send order): no sort.
        code = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.searchsorted(slot, sends.base)))
        sent_t, got_t = sends.table[slot], arrived[slot]
        delay = np.where(got_t != NEVER, got_t - sent_t, np.nan)
        code, sent_t, delay = take(flow_time_order(code, sent_t), code, sent_t, delay)
        return _series_frame(code, sent_t, delay, flows, name)
    else:
        tx_key, tx_t = sends.keys()
        k, got = first_by_key((rx_code << SEQ_BITS) | rx_seq, rx_t)
        i = np.minimum(np.searchsorted(tx_key, k), len(tx_key) - 1)
        hit = tx_key[i] == k
        code, sent_t, got_t = k[hit] >> SEQ_BITS, tx_t[i[hit]], got[hit]
        lost_key = np.setdiff1d((sends.code[wanted] << SEQ_BITS) | sends.seq[wanted], k)
        lost_code, lost_t = lost_key >> SEQ_BITS, tx_t[np.searchsorted(tx_key, lost_key)]
    delay = (got_t - sent_t).astype(float)
    if len(lost_code):
        code = np.concatenate([code, lost_code])
        sent_t = np.concatenate([sent_t, lost_t])
        delay = np.concatenate([delay, np.full(len(lost_code), np.nan)])
    code, sent_t, delay = take(flow_time_order(code, sent_t), code, sent_t, delay)
    return _series_frame(code, sent_t, delay, flows, name)


def _series_frame(
    code: np.ndarray, sent_t: np.ndarray, delay: np.ndarray, flows: np.ndarray, name: str
) -> pd.DataFrame:
    """_series_frame is a delay series: flow (categorical), t_s from the send in ns, the delay in ms from ns."""
    # copy=False: no consolidating copy of millions of rows into one block.
    return pd.DataFrame({"flow": flow_column(code, list(flows)), "t_s": sent_t / 1e9, name: delay / 1e6}, copy=False)


def count_arrivals(code: np.ndarray, t: np.ndarray, seq: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Count received, duplicate, late and early packets per flow.

    ``code``, ``t`` and ``seq`` are each arrival's flow code, time in ns and
    seq; ``n`` is the number of flows. The result maps received, duplicates,
    late and early to arrays of n counts. Received counts distinct seqs. In
    arrival order, a packet is late if a higher seq arrived before it, and
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
    codes, values = flow.cat.codes.to_numpy(np.int64), series[value].to_numpy(float)
    measured = ~np.isnan(values)  # a packet that never arrived has no delay
    if not measured.all():
        codes, values = gather(measured, codes, values)
    q = group_quantiles(codes, values, len(names), [0.5, 0.99])
    return pd.DataFrame(q, index=names, columns=cols)
