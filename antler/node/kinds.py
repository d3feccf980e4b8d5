"""The columns of the stored tables, in plain Python: one table per kind of item, file ``<kind>.parquet``.

A node needs no pyarrow: it knows each kind's columns by name and type name
here, records them into standard-library buffers and ships them as
:class:`antler.node.items.Rows`; the Arrow schemas built from these
(:mod:`antler.node.schemas`) and the record batches exist only where the
driver runs.

Times: ``time`` and ``tinit`` columns are absolute UTC timestamps by the node's
clock; ``t_ns`` columns are nanoseconds relative to the flow's ``tinit``. The
result format version these columns belong to is
:data:`antler.results.store.RESULT_FORMAT_VERSION`.

Type names: ``timestamp`` (ns since the epoch, UTC), ``string``, ``bool``,
``int64``, ``int32``, ``uint64``, ``uint32``, ``uint8``, ``float64``.
"""

from __future__ import annotations

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "log": (("time", "timestamp"), ("node_id", "string"), ("tag", "string"), ("text", "string")),
    "errors": (("time", "timestamp"), ("node_id", "string"), ("tag", "string"), ("message", "string")),
    "stream_info": (
        ("tinit", "timestamp"),
        ("flow", "string"),
        ("direction", "string"),
        ("cca", "string"),
        ("server", "bool"),
        ("node_id", "string"),
        ("length_bytes", "int64"),
        # The socket addresses, "ADDR:PORT", so a flow's packets can be found
        # by their 5-tuple (e.g. in a bottleneck's queue.parquet).
        ("local", "string"),
        ("remote", "string"),
        # Each socket option the kernel granted otherwise than asked:
        # "sockopt SO_SNDBUF: asked 1000, granted 4608", "; " between them; "" if none.
        ("sockopts", "string"),
    ),
    # How each flow the test named ended (ok, failed, cancelled) and why; format 2.
    "flow_status": (
        ("time", "timestamp"),
        ("node_id", "string"),
        ("flow", "string"),
        ("status", "string"),
        ("message", "string"),
    ),
    # A client's local and remote socket addresses ("ADDR:PORT"; "" at a server).
    "packet_info": (
        ("tinit", "timestamp"),
        ("flow", "string"),
        ("server", "bool"),
        ("node_id", "string"),
        ("local", "string"),
        ("remote", "string"),
        ("sockopts", "string"),
    ),
    # One sample after a read or write: total bytes so far on this end.
    "stream_io": (
        ("flow", "string"),
        ("server", "bool"),
        ("t_ns", "int64"),
        ("total_bytes", "int64"),
        ("sent", "bool"),
    ),
    # One TCP_INFO sample of a stream flow's sending socket (linux/tcp.h
    # struct tcp_info). Units: times in microseconds, snd_cwnd, snd_ssthresh,
    # unacked, sacked (SACKed, not yet cumulatively acknowledged), lost,
    # total_retrans, delivered and delivered_ce in segments, ecn whether ECN
    # was negotiated (TCPI_OPT_ECN), rates in bits
    # per second (the kernel's bytes/s times 8; u64 max means unlimited).
    "tcp_info": (
        ("flow", "string"),
        ("server", "bool"),
        ("t_ns", "int64"),
        ("cca", "string"),
        ("state", "uint8"),
        ("ca_state", "uint8"),
        ("rtt_us", "uint32"),
        ("rttvar_us", "uint32"),
        ("min_rtt_us", "uint32"),
        ("snd_cwnd", "uint32"),
        ("snd_ssthresh", "uint32"),
        ("snd_mss", "uint32"),
        ("unacked", "uint32"),
        ("pacing_rate_bps", "uint64"),
        ("delivery_rate_bps", "uint64"),
        ("total_retrans", "uint32"),
        ("lost", "uint32"),
        ("bytes_sent", "uint64"),
        ("bytes_retrans", "uint64"),
        ("bytes_acked", "uint64"),
        ("bytes_received", "uint64"),
        ("notsent_bytes", "uint32"),
        ("delivered_ce", "uint32"),
        ("snd_wnd_bytes", "uint32"),
        ("delivered", "uint32"),
        ("ecn", "bool"),
        ("sacked", "uint32"),
    ),
    # One packet sent or received by a packet client or server. sched_t_ns is
    # when a client's packet was scheduled to be sent (null for other rows), so
    # t_ns - sched_t_ns is the send-time error. Received times are the
    # kernel's (SO_TIMESTAMPNS) where available. tos is the IP TOS / IPv6
    # traffic class byte (DSCP << 2 | ECN) the packet was sent with, or
    # arrived with as the kernel read it (IP_RECVTOS / IPV6_RECVTCLASS), so a
    # CE mark on either path shows (result format 2; null in older results).
    "packet_io": (
        ("flow", "string"),
        ("server", "bool"),
        ("t_ns", "int64"),
        ("seq", "int64"),
        ("length", "int32"),
        ("flags", "uint8"),
        ("sent", "bool"),
        ("sched_t_ns", "int64"),
        ("tos", "uint8"),
    ),
}
"""COLUMNS maps each stored table's kind to its columns: (name, type name) in order."""

NULL = -(1 << 63)
"""NULL stands for a missing value in an int64 sample column (``None`` works too, but takes the slow path)."""

TYPECODES: dict[str, str] = {
    "int64": "q",
    "timestamp": "q",
    "int32": "i",
    "uint64": "Q",
    "uint32": "I",
    "uint8": "B",
    "bool": "b",
    "float64": "d",
}
"""TYPECODES maps the type names a sample buffer holds as a typed ``array`` to its typecode (others: a list)."""
