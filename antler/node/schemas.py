"""The Arrow schemas of the stored tables: one per kind of item, file ``<kind>.parquet``.

Times: ``time`` and ``tinit`` columns are absolute UTC timestamps by the node's
clock; ``t_ns`` columns are nanoseconds relative to the flow's ``tinit``. The
result format version these schemas belong to is
:data:`antler.results.store.RESULT_FORMAT_VERSION`.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("ns", tz="UTC")
"""TIMESTAMP is the type of absolute times: ns since the epoch, UTC."""

SCHEMAS: dict[str, pa.Schema] = {
    "log": pa.schema([("time", TIMESTAMP), ("node_id", pa.string()), ("tag", pa.string()), ("text", pa.string())]),
    "errors": pa.schema(
        [("time", TIMESTAMP), ("node_id", pa.string()), ("tag", pa.string()), ("message", pa.string())]
    ),
    "stream_info": pa.schema(
        [
            ("tinit", TIMESTAMP),
            ("flow", pa.string()),
            ("direction", pa.string()),
            ("cca", pa.string()),
            ("server", pa.bool_()),
            ("node_id", pa.string()),
            ("length_bytes", pa.int64()),
            # The socket addresses, "ADDR:PORT", so a flow's packets can be found
            # by their 5-tuple (e.g. in a bottleneck's queue.parquet).
            ("local", pa.string()),
            ("remote", pa.string()),
        ]
    ),
    # How each flow the test named ended (ok, failed, cancelled) and why; format 2.
    "flow_status": pa.schema(
        [
            ("time", TIMESTAMP),
            ("node_id", pa.string()),
            ("flow", pa.string()),
            ("status", pa.string()),
            ("message", pa.string()),
        ]
    ),
    # A client's local and remote socket addresses ("ADDR:PORT"; "" at a server).
    "packet_info": pa.schema(
        [
            ("tinit", TIMESTAMP),
            ("flow", pa.string()),
            ("server", pa.bool_()),
            ("node_id", pa.string()),
            ("local", pa.string()),
            ("remote", pa.string()),
        ]
    ),
    # One sample after a read or write: total bytes so far on this end.
    "stream_io": pa.schema(
        [
            ("flow", pa.string()),
            ("server", pa.bool_()),
            ("t_ns", pa.int64()),
            ("total_bytes", pa.int64()),
            ("sent", pa.bool_()),
        ]
    ),
    # One TCP_INFO sample of a stream flow's sending socket (linux/tcp.h
    # struct tcp_info). Units: times in microseconds, snd_cwnd, snd_ssthresh,
    # unacked, sacked (SACKed, not yet cumulatively acknowledged), lost,
    # total_retrans, delivered and delivered_ce in segments, ecn whether ECN
    # was negotiated (TCPI_OPT_ECN), rates in bits per second (the kernel's
    # bytes/s times 8; u64 max means unlimited).
    "tcp_info": pa.schema(
        [
            ("flow", pa.string()),
            ("server", pa.bool_()),
            ("t_ns", pa.int64()),
            ("cca", pa.string()),
            ("state", pa.uint8()),
            ("ca_state", pa.uint8()),
            ("rtt_us", pa.uint32()),
            ("rttvar_us", pa.uint32()),
            ("min_rtt_us", pa.uint32()),
            ("snd_cwnd", pa.uint32()),
            ("snd_ssthresh", pa.uint32()),
            ("snd_mss", pa.uint32()),
            ("unacked", pa.uint32()),
            ("pacing_rate_bps", pa.uint64()),
            ("delivery_rate_bps", pa.uint64()),
            ("total_retrans", pa.uint32()),
            ("lost", pa.uint32()),
            ("bytes_sent", pa.uint64()),
            ("bytes_retrans", pa.uint64()),
            ("bytes_acked", pa.uint64()),
            ("bytes_received", pa.uint64()),
            ("notsent_bytes", pa.uint32()),
            ("delivered_ce", pa.uint32()),
            ("snd_wnd_bytes", pa.uint32()),
            ("delivered", pa.uint32()),
            ("ecn", pa.bool_()),
            ("sacked", pa.uint32()),
        ]
    ),
    # One packet sent or received by a packet client or server. sched_t_ns is
    # when a client's packet was scheduled to be sent (null for other rows), so
    # t_ns - sched_t_ns is the send-time error. Received times are the
    # kernel's (SO_TIMESTAMPNS) where available. tos is the IP TOS / IPv6
    # traffic class byte (DSCP << 2 | ECN) the packet was sent with, or
    # arrived with as the kernel read it (IP_RECVTOS / IPV6_RECVTCLASS), so a
    # CE mark on either path shows (result format 2; null in older results).
    "packet_io": pa.schema(
        [
            ("flow", pa.string()),
            ("server", pa.bool_()),
            ("t_ns", pa.int64()),
            ("seq", pa.int64()),
            ("length", pa.int32()),
            ("flags", pa.uint8()),
            ("sent", pa.bool_()),
            ("sched_t_ns", pa.int64()),
            ("tos", pa.uint8()),
        ]
    ),
}
"""SCHEMAS maps each stored table's kind to its Arrow schema (file ``<kind>.parquet``)."""
