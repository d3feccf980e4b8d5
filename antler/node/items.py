"""Data items a node produces (the columns they are stored with: :mod:`antler.node.kinds`).

Single events (a log line, an error, a flow's info, a chunk of a file) travel
as small dataclasses. Measurements (``stream_io``, ``tcp_info``, ``packet_io``)
never travel one sample at a time: they are appended to columnar buffers in the
recorder and shipped as :class:`Batch` es of plain columns (:class:`Rows`),
which the driver's side turns into Arrow record batches.

Times: ``time`` and ``tinit`` are absolute UTC times by the node's clock;
``t_ns`` values are nanoseconds relative to the flow's ``tinit``.

This module imports no pyarrow (a node process has none), so the run tree's
specs (and the config layer that parses them) do not pay for it either.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Union

from antler.node.compat import UTC

if TYPE_CHECKING:
    import pyarrow as pa

ROOT_NODE_ID = "-"
"""ROOT_NODE_ID is the ID of the in-process root node, as in antler."""

DIAGNOSTICS_TAG = "diagnostics"
"""DIAGNOSTICS_TAG tags a log entry holding a launcher's own diagnostics (Ray's account of a dead worker):
kept in the test's log under the node it concerns, never printed live, where the tool's own error leads."""


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
    local: str = ""  # this end's socket address, "ADDR:PORT" ("[ADDR]:PORT" for IPv6), "" if unknown
    remote: str = ""  # the other end's socket address, likewise
    sockopts: str = (
        ""  # what the kernel granted where a sockopt differs ("sockopt SO_SNDBUF: asked 1000, granted 4608")
    )


@dataclass(frozen=True)
class PacketInfo:
    """Describes one end of a packet flow: the base of its relative times."""

    tinit: datetime
    flow: str
    server: bool
    node_id: str = ROOT_NODE_ID
    local: str = ""  # a client's socket address "ADDR:PORT" (the wildcard address if unbound to one), or ""
    remote: str = ""  # a client's server address "ADDR:PORT", or ""
    sockopts: str = ""  # what the kernel granted where a sockopt differs from what was asked, as StreamInfo's


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
class Rows:
    """Samples of one kind as plain columns: what a node records and ships, no Arrow needed.

    ``columns`` maps a column's name to its values: a typed ``array`` (the
    typecode :data:`antler.node.kinds.TYPECODES` gives its type; in an int64
    column :data:`antler.node.kinds.NULL` is a missing value) or a list (strings). ``constants``
    maps the name of a column that holds the same value in every row (the
    flow, ``server``) to that value. ``n`` is the number of rows.
    """

    n: int
    columns: dict[str, array[Any] | list[Any]]
    constants: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A run of measurement samples of one kind and flow.

    ``data`` is what the node recorded (:class:`Rows`) or, on the driver, an
    Arrow record batch; :attr:`batch` is always the record batch (built on
    the driver's side, which has pyarrow; a node never asks for it).
    """

    kind: str
    flow: str
    data: Rows | pa.RecordBatch
    node_id: str = ROOT_NODE_ID

    @property
    def batch(self) -> pa.RecordBatch:
        """Return the samples as an Arrow record batch of the kind's schema (imports pyarrow)."""
        if isinstance(self.data, Rows):
            from antler.node.arrow import record_batch

            rows = self.data
            return record_batch(self.kind, rows.n, rows.columns, rows.constants)
        return self.data

    @property
    def rows(self) -> Rows:
        """Return the samples as plain columns (from a record batch, this imports pyarrow)."""
        if isinstance(self.data, Rows):
            return self.data
        from antler.node.arrow import plain_columns

        return Rows(self.data.num_rows, plain_columns(self.kind, self.data))

    @property
    def num_rows(self) -> int:
        """Return the number of samples."""
        return self.data.n if isinstance(self.data, Rows) else self.data.num_rows


Item = Union[LogEntry, Error, FileData, StreamInfo, PacketInfo, SysInfo, Batch, FlowStatus]
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
            "local": item.local,
            "remote": item.remote,
            "sockopts": item.sockopts,
        }
    return "packet_info", {
        "tinit": item.tinit,
        "flow": item.flow,
        "server": item.server,
        "node_id": item.node_id,
        "local": item.local,
        "remote": item.remote,
        "sockopts": item.sockopts,
    }


def sockaddr_text(addr: object) -> str:
    """Return a socket address as ``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6), or "" for one that is not (host, port, ...)."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return ""
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
