"""Data items a node produces (the Arrow schemas they are stored with: :mod:`antler.node.schemas`).

Single events (a log line, an error, a flow's info, a chunk of a file) travel
as small dataclasses. Measurements (``stream_io``, ``tcp_info``, ``packet_io``)
never travel one sample at a time: they are appended to columnar buffers in the
recorder and shipped as :class:`Batch` es of Arrow record batches.

Times: ``time`` and ``tinit`` are absolute UTC times by the node's clock;
``t_ns`` values are nanoseconds relative to the flow's ``tinit``.

This module imports no pyarrow, so the run tree's specs (and the config layer
that parses them) do not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

ROOT_NODE_ID = "-"
"""ROOT_NODE_ID is the ID of the in-process root node, as in antler."""

DIAGNOSTICS_TAG = "diagnostics"
"""DIAGNOSTICS_TAG tags a log entry holding a launcher's own diagnostics (Ray's account of a dead worker):
kept in the test's log under the node it concerns, never printed live, where the tool's own error leads."""

NULL = -(1 << 63)
"""NULL stands for a missing value in an int64 sample column (``None`` works too, but takes the slow path)."""


def now() -> datetime:
    """Return the current UTC time, as recorded in items."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class LogEntry:
    """One log line, with the node time and the tag of its source."""

    time: datetime
    node_id: str
    tag: str
    text: str

    def __str__(self) -> str:
        return f"{self.time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {self.node_id} {self.tag}: {self.text}"


@dataclass(frozen=True)
class Error:
    """An unrecoverable error that occurred on a node; it ends the test."""

    time: datetime
    node_id: str
    tag: str
    message: str

    def __str__(self) -> str:
        return f"{self.time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')} {self.node_id} {self.tag}: error: {self.message}"


class RunnerError(Exception):
    """A runner failure as an exception; the :class:`Error` item it carries is already recorded.

    An :class:`Error` is data (it travels to the results); RunnerError is how
    a failure unwinds the run tree.
    """

    def __init__(self, message: str, error: Error | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class FileData:
    """A chunk of a file to be saved in the test's result folder.

    Chunks with the same name are appended in the order they arrive.
    """

    name: str
    data: bytes
    node_id: str = ROOT_NODE_ID


@dataclass(frozen=True)
class StreamInfo:
    """Describes one end of a stream flow: the base of its relative times."""

    tinit: datetime
    flow: str
    direction: str  # "up" (client to server) or "down"
    cca: str
    server: bool
    node_id: str = ROOT_NODE_ID
    length: int = 0  # the flow's length limit in bytes (a flow-completion-time flow), 0 for none


@dataclass(frozen=True)
class PacketInfo:
    """Describes one end of a packet flow: the base of its relative times."""

    tinit: datetime
    flow: str
    server: bool
    node_id: str = ROOT_NODE_ID


FLOW_OK, FLOW_FAILED, FLOW_CANCELLED = "ok", "failed", "cancelled"
"""FLOW_OK, FLOW_FAILED and FLOW_CANCELLED are the outcomes a FlowStatus reports."""


@dataclass(frozen=True)
class FlowStatus:
    """How a flow the test named ended: ``ok``, ``failed`` (with the error) or ``cancelled`` (with why).

    The node that runs a flow's client records it when the client runner
    ends, and the node that was to start it records it for a flow that never
    started (the test stopped first).
    """

    time: datetime
    node_id: str
    flow: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class SysInfo:
    """The system information a ``sysinfo`` runner gathered on a node."""

    node_id: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A run of measurement samples of one kind and flow, as Arrow columns."""

    kind: str
    flow: str
    batch: pa.RecordBatch
    node_id: str = ROOT_NODE_ID


Item = LogEntry | Error | FileData | StreamInfo | PacketInfo | SysInfo | Batch | FlowStatus
"""Item is any data item a node sends towards the root's sink."""


def info_row(item: StreamInfo | PacketInfo | LogEntry | Error | FlowStatus) -> tuple[str, dict[str, object]]:
    """Return the table kind and the row for a single-event item."""
    if isinstance(item, FlowStatus):
        return "flow_status", {
            "time": item.time,
            "node_id": item.node_id,
            "flow": item.flow,
            "status": item.status,
            "message": item.message,
        }
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
