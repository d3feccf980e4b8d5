"""Per-flow metrics of packet flows: loss, duplicates, reordering, RTT, one-way delay, send-time error.

Input tables are ``packet_info`` and ``packet_io`` as stored (see
antler.node.items.SCHEMAS). Everything is vectorised per flow; there is no
loop over samples.

Definitions (after irtt's). A packet's *destination* is the client for echo
packets (the reply must come back) and the server otherwise. Its *arrivals*
are the packets with its seq recorded as received at the destination, in
order of receive time.

- ``sent``: distinct sequence numbers the client sent.
- ``received``: distinct sequence numbers of sent packets that arrived at
  their destination at least once.
- ``lost``: ``sent - received`` (``loss_pct`` is that as a percentage of sent).
  Packets still in flight when recording stopped count as lost.
- ``duplicates``: arrivals of a sequence number that had already arrived.
- ``late``: first arrivals whose seq is lower than that of a packet that
  arrived before them (they were overtaken).
- ``early`` (out of order): first arrivals whose seq is higher than that of a
  packet that arrived after them (they overtook it). A lost packet makes
  neither late nor early arrivals; one reordering makes at least one of each.
- ``server_received``: distinct seqs the server received (so for echo flows,
  ``sent - server_received`` is the loss on the way up).
- ``rtt_ms_median``, ``rtt_ms_p99``: round-trip time of echo packets, from
  the client's send time to the first reply's kernel receive time, both on
  the client's clock.
- ``owd_ms_median``: one-way delay client to server from absolute times
  (``tinit + t_ns``) of both ends. It is only meaningful where the two
  nodes' clocks agree (one host, or PTP): across unsynchronised hosts it
  carries the clock offset. NaN without both ends' packet_info.
- ``send_error_us_median``, ``_p99``, ``_max``: actual send time minus the
  scheduled time of the client's packets (``t_ns - sched_t_ns``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ECHO = 1
"""ECHO is the echo-request flag bit (antler.node.runners.packet.wire.PacketFlag.ECHO)."""

FLOW_COLUMNS = [
    "flow",
    "kind",
    "sent",
    "received",
    "lost",
    "loss_pct",
    "duplicates",
    "late",
    "early",
    "server_received",
    "echo",
    "rtt_ms_median",
    "rtt_ms_p99",
    "owd_ms_median",
    "send_error_us_median",
    "send_error_us_p99",
    "send_error_us_max",
]
"""FLOW_COLUMNS are the columns of :func:`packet_flows`, in order."""

_EPOCH = pd.Timestamp(0, tz="UTC")


def arrival_counts(seq: np.ndarray) -> tuple[int, int, int, int]:
    """Arrival_counts returns (received, duplicates, late, early) for seqs in order of arrival.

    See the module docstring for the definitions.
    """
    seq = np.asarray(seq, dtype=np.int64)
    if seq.size == 0:
        return 0, 0, 0, 0
    first = ~pd.Series(seq).duplicated().to_numpy()
    s = seq[first]
    duplicates = int(seq.size - s.size)
    prev_max = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(s)[:-1]))
    next_min = np.concatenate((np.minimum.accumulate(s[::-1])[::-1][1:], [np.iinfo(np.int64).max]))
    late = int(np.count_nonzero(s < prev_max))
    early = int(np.count_nonzero(s > next_min))
    return int(s.size), duplicates, late, early


def packet_flows(packet_info: pd.DataFrame | None, packet_io: pd.DataFrame) -> pd.DataFrame:
    """Packet_flows returns one row of metrics per packet flow (columns :data:`FLOW_COLUMNS`)."""
    rows = []
    if packet_io is not None and len(packet_io):
        tinit = _tinit_ns(packet_info)
        for flow, io in packet_io.groupby("flow", sort=True):
            rows.append(_flow_row(str(flow), io, tinit))
    return pd.DataFrame(rows, columns=FLOW_COLUMNS)


def packet_rtt_series(packet_io: pd.DataFrame) -> pd.DataFrame:
    """Packet_rtt_series returns (flow, t_s, rtt_ms) for each answered echo packet.

    ``t_s`` is the send time in seconds from the client's flow start.
    """
    cols = ["flow", "t_s", "rtt_ms"]
    if packet_io is None or not len(packet_io):
        return pd.DataFrame(columns=cols)
    client = packet_io[~packet_io["server"].astype(bool)]
    tx = _first(client[client["sent"].astype(bool)], ["flow", "seq"])
    rx = _first(client[~client["sent"].astype(bool)], ["flow", "seq"])
    m = tx[["flow", "seq", "t_ns"]].merge(rx[["flow", "seq", "t_ns"]], on=["flow", "seq"], suffixes=("_tx", "_rx"))
    out = pd.DataFrame(
        {
            "flow": m["flow"].astype(str),
            "t_s": m["t_ns_tx"].to_numpy() / 1e9,
            "rtt_ms": (m["t_ns_rx"] - m["t_ns_tx"]).to_numpy() / 1e6,
        }
    )
    return out.sort_values(["flow", "t_s"], kind="stable").reset_index(drop=True)


def packet_owd_series(packet_info: pd.DataFrame | None, packet_io: pd.DataFrame) -> pd.DataFrame:
    """Packet_owd_series returns (flow, t_s, owd_ms): one-way delay client to server per packet.

    ``t_s`` is the send time in seconds from the client's flow start. Only
    meaningful where both nodes' clocks agree (see the module docstring).
    """
    cols = ["flow", "t_s", "owd_ms"]
    tinit = _tinit_ns(packet_info)
    if packet_io is None or not len(packet_io) or not tinit:
        return pd.DataFrame(columns=cols)
    parts = []
    for flow, io in packet_io.groupby("flow", sort=True):
        owd = _owd(str(flow), io, tinit)
        if owd is not None:
            t_s, owd_ns = owd
            parts.append(pd.DataFrame({"flow": str(flow), "t_s": t_s / 1e9, "owd_ms": owd_ns / 1e6}))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)


def _tinit_ns(packet_info: pd.DataFrame | None) -> dict[tuple[str, bool], int]:
    if packet_info is None or not len(packet_info):
        return {}
    ns = (pd.to_datetime(packet_info["tinit"], utc=True) - _EPOCH) // pd.Timedelta(1, "ns")
    keys = zip(packet_info["flow"].astype(str), packet_info["server"].astype(bool), strict=True)
    return {k: int(v) for k, v in zip(keys, ns, strict=True)}


def _first(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """_first keeps the earliest row of each key (the first arrival of a seq)."""
    return df.sort_values("t_ns", kind="stable").drop_duplicates(by, keep="first")


def _owd(flow: str, io: pd.DataFrame, tinit: dict[tuple[str, bool], int]) -> tuple[np.ndarray, np.ndarray] | None:
    if (flow, False) not in tinit or (flow, True) not in tinit:
        return None
    server = io["server"].astype(bool)
    sent = io["sent"].astype(bool)
    tx = _first(io[~server & sent], ["seq"])
    srx = _first(io[server & ~sent], ["seq"])
    m = tx[["seq", "t_ns"]].merge(srx[["seq", "t_ns"]], on="seq", suffixes=("_tx", "_rx"))
    if not len(m):
        return None
    offset = tinit[(flow, True)] - tinit[(flow, False)]
    tx_t = m["t_ns_tx"].to_numpy(dtype=np.int64)
    return tx_t, m["t_ns_rx"].to_numpy(dtype=np.int64) + offset - tx_t


def _flow_row(flow: str, io: pd.DataFrame, tinit: dict[tuple[str, bool], int]) -> dict[str, object]:
    server = io["server"].astype(bool).to_numpy()
    sent = io["sent"].astype(bool).to_numpy()
    tx = io[~server & sent].sort_values("t_ns", kind="stable").drop_duplicates("seq")
    crx = io[~server & ~sent].sort_values("t_ns", kind="stable")
    srx = io[server & ~sent].sort_values("t_ns", kind="stable")
    echo_mask = (tx["flags"].to_numpy(dtype=np.int64) & ECHO) != 0
    echo_seqs = tx["seq"].to_numpy(dtype=np.int64)[echo_mask]
    oneway_seqs = tx["seq"].to_numpy(dtype=np.int64)[~echo_mask]
    n_sent = len(tx)

    # Each packet's arrivals are counted at its destination: echo packets at
    # the client, one-way packets at the server.
    received = duplicates = late = early = 0
    have_server = (flow, True) in tinit or len(srx) > 0
    for arrivals, wanted in (
        (crx["seq"].to_numpy(dtype=np.int64), echo_seqs),
        (srx["seq"].to_numpy(dtype=np.int64), oneway_seqs),
    ):
        if wanted.size == 0:
            continue
        r, d, lt, e = arrival_counts(arrivals[np.isin(arrivals, wanted)])
        received, duplicates, late, early = received + r, duplicates + d, late + lt, early + e
    unknown = oneway_seqs.size > 0 and not have_server

    rtt_median = rtt_p99 = owd_median = np.nan
    if echo_seqs.size:
        first_rx = crx.drop_duplicates("seq")
        m = tx[echo_mask][["seq", "t_ns"]].merge(first_rx[["seq", "t_ns"]], on="seq", suffixes=("_tx", "_rx"))
        if len(m):
            rtt = (m["t_ns_rx"] - m["t_ns_tx"]).to_numpy() / 1e6
            rtt_median, rtt_p99 = float(np.median(rtt)), float(np.percentile(rtt, 99))
    owd = _owd(flow, io, tinit)
    if owd is not None:
        owd_median = float(np.median(owd[1])) / 1e6

    err_median = err_p99 = err_max = np.nan
    if n_sent and "sched_t_ns" in tx:
        sched = tx["sched_t_ns"]
        ok = sched.notna().to_numpy()
        if ok.any():
            err = (tx["t_ns"].to_numpy(dtype=np.int64)[ok] - sched.to_numpy()[ok].astype(np.int64)) / 1e3
            err_median, err_p99, err_max = float(np.median(err)), float(np.percentile(err, 99)), float(err.max())

    lost: float = np.nan if unknown else float(n_sent - received)
    return {
        "flow": flow,
        "kind": "packet",
        "sent": n_sent,
        "received": np.nan if unknown else received,
        "lost": lost,
        "loss_pct": 100.0 * lost / n_sent if n_sent and not unknown else np.nan,
        "duplicates": duplicates,
        "late": late,
        "early": early,
        "server_received": int(srx["seq"].nunique()) if have_server else np.nan,
        "echo": bool(echo_seqs.size),
        "rtt_ms_median": rtt_median,
        "rtt_ms_p99": rtt_p99,
        "owd_ms_median": owd_median,
        "send_error_us_median": err_median,
        "send_error_us_p99": err_p99,
        "send_error_us_max": err_max,
    }
