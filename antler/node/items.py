"""Data items a node produces, and the Arrow schemas they are stored with.

Single events (a log line, an error, a flow's info, a chunk of a file) travel
as small dataclasses. Measurements (``stream_io``, ``tcp_info``, ``packet_io``)
never travel one sample at a time: they are appended to columnar buffers in the
recorder and shipped as :class:`Batch` es of Arrow record batches.

Times: ``time`` and ``tinit`` columns are absolute UTC timestamps by the node's
clock; ``t_ns`` columns are nanoseconds relative to the flow's ``tinit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

RESULT_FORMAT_VERSION = 1
"""RESULT_FORMAT_VERSION is the version of the result files this code writes."""

ROOT_NODE_ID = "-"
"""ROOT_NODE_ID is the ID of the in-process root node, as in antler."""

TIMESTAMP = pa.timestamp("ns", tz="UTC")


def now() -> datetime:
    """Now returns the current UTC time, as recorded in items."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class LogEntry:
    """LogEntry is one log line, with the node time and the tag of its source."""

    time: datetime
    node_id: str
    tag: str
    text: str

    def __str__(self) -> str:
        return f"{self.time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {self.node_id} {self.tag}: {self.text}"


@dataclass(frozen=True)
class Error:
    """Error is an unrecoverable error that occurred on a node; it ends the test."""

    time: datetime
    node_id: str
    tag: str
    message: str

    def __str__(self) -> str:
        return f"{self.time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {self.node_id} {self.tag}: error: {self.message}"


@dataclass(frozen=True)
class FileData:
    """FileData is a chunk of a file to be saved in the test's result folder.

    Chunks with the same name are appended in the order they arrive.
    """

    name: str
    data: bytes
    node_id: str = ROOT_NODE_ID


@dataclass(frozen=True)
class StreamInfo:
    """StreamInfo describes one end of a stream flow: the base of its relative times."""

    tinit: datetime
    flow: str
    direction: str  # "up" (client to server) or "down"
    cca: str
    server: bool
    node_id: str = ROOT_NODE_ID
    length: int = 0  # the flow's length limit in bytes (a flow-completion-time flow), 0 for none


@dataclass(frozen=True)
class PacketInfo:
    """PacketInfo describes one end of a packet flow: the base of its relative times."""

    tinit: datetime
    flow: str
    server: bool
    node_id: str = ROOT_NODE_ID


@dataclass(frozen=True)
class SysInfo:
    """SysInfo is the system information a ``sysinfo`` runner gathered on a node."""

    node_id: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Batch is a run of measurement samples of one kind and flow, as Arrow columns."""

    kind: str
    flow: str
    batch: pa.RecordBatch
    node_id: str = ROOT_NODE_ID


Item = LogEntry | Error | FileData | StreamInfo | PacketInfo | SysInfo | Batch
"""Item is any data item a node sends towards the root's sink."""


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
        ]
    ),
    "packet_info": pa.schema(
        [("tinit", TIMESTAMP), ("flow", pa.string()), ("server", pa.bool_()), ("node_id", pa.string())]
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
    # unacked, lost, total_retrans and delivered_ce in segments, rates in bits
    # per second (the kernel's bytes/s times 8; u64 max means unlimited).
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
        ]
    ),
    # One packet sent or received by a packet client or server. sched_t_ns is
    # when a client's packet was scheduled to be sent (null for other rows), so
    # t_ns - sched_t_ns is the send-time error. Received times are the
    # kernel's (SO_TIMESTAMPNS) where available.
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
        ]
    ),
}
"""SCHEMAS maps each stored table's kind to its Arrow schema (file ``<kind>.parquet``)."""

MEASUREMENT_KINDS = ("stream_io", "tcp_info", "packet_io")


def info_row(item: StreamInfo | PacketInfo | LogEntry | Error) -> tuple[str, dict[str, object]]:
    """Info_row returns the table kind and the row for a single-event item."""
    if isinstance(item, LogEntry):
        return "log", {"time": item.time, "node_id": item.node_id, "tag": item.tag, "text": item.text}
    if isinstance(item, Error):
        return "errors", {"time": item.time, "node_id": item.node_id, "tag": item.tag, "message": item.message}
    if isinstance(item, StreamInfo):
        return "stream_info", {
            "tinit": item.tinit,
            "flow": item.flow,
            "direction": item.direction,
            "cca": item.cca,
            "server": item.server,
            "node_id": item.node_id,
            "length_bytes": item.length,
        }
    return "packet_info", {"tinit": item.tinit, "flow": item.flow, "server": item.server, "node_id": item.node_id}


def flow_of(item: Item) -> str | None:
    """Flow_of returns the flow an item belongs to, or None."""
    if isinstance(item, (StreamInfo, PacketInfo, Batch)):
        return item.flow
    return None
