"""The node wire protocol: frames between a parent and a child node over a byte stream.

A local node (a child process, over its stdin and stdout) and an SSH node (over
the SSH session's channel) speak it with their parent; :mod:`antler.node.conn`
moves the frames, :mod:`antler.node.process` is the child's side and
:mod:`antler.node.launch.child` the parent's.

Every frame, both ways, is a 12-byte header and a payload::

    offset  size  field
    0       2     magic    b"AN"
    2       1     version  PROTOCOL_VERSION (1)
    3       1     kind     one of the kinds below
    4       4     length   big-endian length of the payload, at most MAX_PAYLOAD
    8       4     crc      big-endian CRC-32 (zlib.crc32) of the payload
    12      length payload

A reader checks the magic, the version, the kind, the length and the CRC of
every frame: a frame with another version is a :class:`VersionMismatch`
(the two ends run different antler releases), anything else wrong is a
:class:`CorruptFrame` (a stray write into the stream, a truncated or flipped
byte). Either ends the node: a stream that lost its framing cannot be resynced.

Kinds and payloads (integers big-endian, text UTF-8):

- ``CALL`` (1), parent to node: call id (u32), then a pickle (protocol 5) of
  ``(method, args)``. Methods: ``setup(node, netns)``, ``clock()``,
  ``set_hmac_key(key)``, ``launch_nodes(tree)``, ``run(run, feedback)``,
  ``cleanup()``. A run tree and its feedback cross pickled: the parent already
  runs arbitrary commands on the node, so unpickling there adds nothing an
  attacker on that authenticated channel could not do anyway.
- ``CANCEL`` (2), parent to node: call id (u32) of the call to cancel, then
  why, as UTF-8 text (may be empty): the node's canceled runners log it.
- ``SHUTDOWN`` (3), parent to node: empty. The node stops its children and
  itself, then closes its end of the stream.
- ``REPLY`` (4), node to parent: call id (u32), status (u8: 0 ok, 1 error,
  2 canceled), then JSON: the call's value, the error message, or null.
- ``ITEM`` (5), node to parent: JSON length (u32), a JSON object (the item's
  type and fields; times as ``*_ns`` integers since the epoch, UTC), then raw
  bytes (a :class:`FileData`'s data; empty for other items).
- ``BATCH`` (6), node to parent: JSON length (u32), ``{"kind", "flow",
  "node_id", "rows", "byteorder", "constants", "columns"}``, then each
  column's bytes in the order of ``columns``: the measurements of one flow,
  thousands of samples per frame, never one. ``columns`` lists
  ``[name, code, nbytes]``: ``code`` is the column's ``array`` typecode
  (its raw items in ``byteorder``, "little" or "big") or ``"json"`` (a JSON
  list, for strings); ``constants`` maps the columns that hold one value in
  every row to it. Both ends need only the standard library; the driver's
  side makes the Arrow record batch (:mod:`antler.node.arrow`).
- ``LOST`` (7), node to parent: a message: a node this node launched was lost
  (its Error already went up as an ITEM).
- ``HEARTBEAT`` (8), node to parent: empty, every :data:`HEARTBEAT_SECONDS`,
  so a parent tells a silent node from a dead host.

Nothing a node sends is unpickled: a compromised test host cannot run code on
the machine that drives the test.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from enum import IntEnum
from typing import Any, Union

from antler.node.compat import UTC
from antler.node.items import (
    Batch,
    Error,
    FileData,
    FlowStatus,
    Item,
    LogEntry,
    PacketInfo,
    Rows,
    StreamInfo,
    SysInfo,
)
from antler.node.kinds import COLUMNS, TYPECODES

MAGIC = b"AN"
PROTOCOL_VERSION = 1
"""PROTOCOL_VERSION is the version of the frame layout and of the messages; both ends must agree."""
MAX_PAYLOAD = 256 * 2**20
"""MAX_PAYLOAD bounds a frame's payload (a 65,536-row batch of the widest schema is about 12 MB)."""
HEARTBEAT_SECONDS = 1.0
"""HEARTBEAT_SECONDS is how often a node tells its parent it is alive."""

HEADER = struct.Struct("!2sBBII")
"""HEADER is the frame header: magic, version, kind, payload length, payload CRC-32."""
_U32 = struct.Struct("!I")
_REPLY = struct.Struct("!IB")

Chunk = Union[bytes, bytearray, memoryview, "array[Any]"]
"""Chunk is a piece of a frame's payload, written as is (a sample column's array is not copied)."""


class Kind(IntEnum):
    """A frame's kind (see the module docstring)."""

    CALL = 1
    CANCEL = 2
    SHUTDOWN = 3
    REPLY = 4
    ITEM = 5
    BATCH = 6
    LOST = 7
    HEARTBEAT = 8


class Status(IntEnum):
    """How a call ended, in a REPLY."""

    OK = 0
    ERROR = 1
    CANCELED = 2


class WireError(Exception):
    """A stream that no longer carries valid frames."""


class VersionMismatch(WireError):
    """A frame of another protocol version: the two ends run different releases."""

    def __init__(self, theirs: int) -> None:
        super().__init__(
            f"protocol version mismatch: the other end speaks version {theirs}, this end {PROTOCOL_VERSION}"
        )
        self.theirs = theirs


class CorruptFrame(WireError):
    """A frame whose magic, kind, length, CRC or contents are wrong."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"corrupt frame: {problem}")


# --- frames


def frame(kind: Kind, *parts: Chunk) -> list[Chunk]:
    """Return a frame's header followed by its payload parts, ready to write in order."""
    length, crc = 0, 0
    for p in parts:
        view = memoryview(p)  # type: ignore[arg-type]
        length += view.nbytes
        crc = zlib.crc32(view, crc)
    if length > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {length} bytes is over the limit of {MAX_PAYLOAD}")
    return [HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, length, crc), *parts]


def parse_header(header: bytes) -> tuple[Kind, int, int]:
    """Check a frame header and return its kind, payload length and CRC.

    Raises VersionMismatch or CorruptFrame.
    """
    magic, version, kind, length, crc = HEADER.unpack(header)
    if magic != MAGIC:
        raise CorruptFrame(f"bad magic {header[:8]!r} (expected {MAGIC!r})")
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(version)
    if kind not in Kind._value2member_map_:
        raise CorruptFrame(f"unknown kind {kind}")
    if length > MAX_PAYLOAD:
        raise CorruptFrame(f"length {length} over the limit of {MAX_PAYLOAD}")
    return Kind(kind), length, crc


def check_payload(payload: bytes | bytearray, crc: int) -> None:
    """Raise CorruptFrame if the payload does not match the header's CRC."""
    got = zlib.crc32(payload)
    if got != crc:
        raise CorruptFrame(f"CRC mismatch (header {crc:#010x}, payload {got:#010x})")


# --- parent to node


def encode_call(call_id: int, method: str, args: Sequence[Any]) -> list[Chunk]:
    """Return a CALL frame."""
    return frame(Kind.CALL, _U32.pack(call_id), pickle.dumps((method, tuple(args)), protocol=5))


def decode_call(payload: bytes) -> tuple[int, str, tuple[Any, ...]]:
    """Return a CALL's id, method and arguments."""
    (call_id,) = _U32.unpack_from(payload)
    method, args = pickle.loads(memoryview(payload)[_U32.size :])
    return call_id, method, args


def encode_cancel(call_id: int, reason: str = "") -> list[Chunk]:
    """Return a CANCEL frame: the call to cancel and why (antler.node.run.cancel_reason)."""
    return frame(Kind.CANCEL, _U32.pack(call_id), reason.encode())


def decode_cancel(payload: bytes) -> tuple[int, str]:
    """Return the call id and the reason of a CANCEL; a malformed one is a CorruptFrame."""
    if len(payload) < _U32.size:
        raise CorruptFrame(f"a cancel of {len(payload)} bytes")
    (value,) = _U32.unpack_from(payload)
    try:
        reason = bytes(payload[_U32.size :]).decode()
    except UnicodeDecodeError as e:
        raise CorruptFrame(f"a cancel whose reason is not UTF-8: {e}") from None
    return int(value), reason


# --- node to parent


def encode_reply(call_id: int, status: Status, value: Any) -> list[Chunk]:
    """Return a REPLY frame; the value must be plain data (JSON)."""
    return frame(Kind.REPLY, _REPLY.pack(call_id, status), json.dumps(value).encode())


def decode_reply(payload: bytes) -> tuple[int, Status, Any]:
    """Return a REPLY's call id, status and value."""
    try:
        call_id, status = _REPLY.unpack_from(payload)
        return call_id, Status(status), json.loads(payload[_REPLY.size :])
    except (struct.error, ValueError) as e:
        raise CorruptFrame(f"bad reply: {e}") from None


_ITEMS: dict[str, type] = {
    c.__name__: c for c in (LogEntry, Error, FileData, StreamInfo, PacketInfo, SysInfo, FlowStatus)
}


def encode_item(item: Item) -> list[Chunk]:
    """Return the ITEM or BATCH frame of a data item."""
    if isinstance(item, Batch):
        return _encode_batch(item)
    obj: dict[str, Any] = {"type": type(item).__name__}
    tail = b""
    for f in fields(item):  # type: ignore[arg-type]
        v = getattr(item, f.name)
        if isinstance(v, datetime):
            obj[f.name + "_ns"] = _ns(v)
        elif isinstance(v, bytes):
            tail = v
        else:
            obj[f.name] = v
    head = json.dumps(obj, default=str).encode()
    return frame(Kind.ITEM, _U32.pack(len(head)), head, tail)


def decode_item(kind: Kind, payload: bytes) -> Item:
    """Return the data item of an ITEM or BATCH frame; anything unexpected is a CorruptFrame."""
    try:
        (n,) = _U32.unpack_from(payload)
        head = json.loads(payload[_U32.size : _U32.size + n])
        rest = memoryview(payload)[_U32.size + n :]
        if kind == Kind.BATCH:
            return _decode_batch(head, rest)
        cls = _ITEMS[head.pop("type")]
        args: dict[str, Any] = {}
        for f in fields(cls):
            if f.name + "_ns" in head:
                args[f.name] = _time(head[f.name + "_ns"])
            elif f.type == "bytes":
                args[f.name] = bytes(rest)
            elif f.name in head:
                args[f.name] = head[f.name]
        item: Item = cls(**args)
        return item
    except CorruptFrame:
        raise
    except (KeyError, TypeError, ValueError, struct.error) as e:
        raise CorruptFrame(f"bad {kind.name.lower()}: {type(e).__name__}: {e}") from None


def _encode_batch(item: Batch) -> list[Chunk]:
    rows = item.rows
    parts: list[Chunk] = []
    columns = []
    for name, values in rows.columns.items():
        part: Chunk = values if isinstance(values, array) else json.dumps(values).encode()
        parts.append(part)
        code = values.typecode if isinstance(values, array) else "json"
        columns.append([name, code, memoryview(part).nbytes])  # type: ignore[arg-type]
    head = {
        "kind": item.kind,
        "flow": item.flow,
        "node_id": item.node_id,
        "rows": rows.n,
        "byteorder": sys.byteorder,
        "constants": rows.constants,
        "columns": columns,
    }
    encoded = json.dumps(head).encode()
    return frame(Kind.BATCH, _U32.pack(len(encoded)), encoded, *parts)


def _decode_batch(head: dict[str, Any], rest: memoryview) -> Batch:
    kind = head["kind"]
    if kind not in COLUMNS:
        raise CorruptFrame(f"a batch of unknown kind {kind!r}")
    types = dict(COLUMNS[kind])
    n = int(head["rows"])
    swap = head["byteorder"] != sys.byteorder
    columns: dict[str, array[Any] | list[Any]] = {}
    at = 0
    for name, code, nbytes in head["columns"]:
        if name not in types or name in columns:
            raise CorruptFrame(f"a {kind} batch with a column {name!r} it has not or twice")
        expected = TYPECODES.get(types[name], "json")
        if code != expected:
            raise CorruptFrame(f"a {kind} batch whose column {name!r} is {code!r}, not {expected!r}")
        chunk = rest[at : at + nbytes]
        at += nbytes
        if len(chunk) != nbytes:
            raise CorruptFrame(f"a {kind} batch cut short in column {name!r}")
        values: array[Any] | list[Any]
        if code == "json":
            values = json.loads(bytes(chunk))
            if not isinstance(values, list):
                raise CorruptFrame(f"a {kind} batch whose column {name!r} is not a list")
        else:
            values = array(code)
            values.frombytes(chunk)
            if swap:
                values.byteswap()
        if len(values) != n:
            raise CorruptFrame(f"a {kind} batch of {n} rows whose column {name!r} has {len(values)}")
        columns[name] = values
    constants = head["constants"]
    if set(columns) | set(constants) != set(types) or at != len(rest):
        raise CorruptFrame(f"a {kind} batch whose columns are not those of its kind")
    return Batch(kind, head["flow"], Rows(n, columns, constants), head["node_id"])


def _ns(t: datetime) -> int:
    delta = t - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _time(ns: int) -> datetime:
    seconds, rest = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
