"""The recorder: how runners emit logs, errors, files and measurements.

Measurements are appended to per-flow columnar buffers (:class:`Columns`) and
leave the node as batches of plain columns (:class:`Rows`), never as one
message per sample; the driver's side makes Arrow record batches of them. The
node flushes the buffers every ``flush_interval`` and when its run tree ends.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from typing import Any

from antler.node.filter import ResultStream
from antler.node.items import Batch, Error, FileData, Item, LogEntry, Rows, now
from antler.node.kinds import COLUMNS, NULL, TYPECODES

Sink = Callable[[Item], None]
"""Sink receives the data items of a node, in order; it must be thread-safe."""

BATCH_ROWS = 65536
"""BATCH_ROWS is the most rows a buffer holds before it is shipped."""


def _new_column(type_: str) -> array[Any] | list[Any]:
    """_new_column is an empty buffer for a column: a typed array (no Python object per value) or a list."""
    code = TYPECODES.get(type_)
    return array(code) if code else []


class Columns:
    """A columnar buffer of samples of one kind for one flow.

    Appending is thread-safe, so a dedicated sender thread (the packet runner's
    timer) can record without going through the event loop. Numeric and
    boolean columns are typed arrays, so a buffer holds no Python object per
    sample (the garbage collector never walks them) and appending costs a C
    call per value. Taking the buffer swaps it for an empty one: the node
    ships the arrays as they are (:class:`Rows`) and the driver's side builds
    the Arrow batch, so a node holds the GIL for no conversion, which would
    land in a packet sender's send times. In an int64 column, :data:`NULL` (or
    None) is a missing value.
    """

    def __init__(self, kind: str, flow: str, ship: Callable[[Columns], None], **constants: Any) -> None:
        self.kind = kind
        self.flow = flow
        self._constants = {**constants, "flow": flow}
        self._names = [n for n, _ in COLUMNS[kind] if n not in self._constants]
        self._types = [t for n, t in COLUMNS[kind] if n not in self._constants]
        self._cols = self._new()
        self._lock = threading.Lock()
        self._ship = ship

    def _new(self) -> list[array[Any] | list[Any]]:
        return [_new_column(t) for t in self._types]

    @property
    def names(self) -> list[str]:
        """Lists the columns passed to append, in order."""
        return list(self._names)

    def append(self, *values: Any) -> None:
        """Add one sample, with values in the order of ``names``."""
        with self._lock:
            cols = self._cols
            if len(values) != len(cols):
                raise ValueError(f"{self.kind} sample of {len(values)} values for columns {self._names}")
            try:
                for col, v in zip(cols, values):
                    col.append(v)
            except TypeError:
                self._append_nulls(values)
            full = len(cols[0]) >= BATCH_ROWS
        if full:
            self._ship(self)

    def _append_nulls(self, values: tuple[Any, ...]) -> None:
        # A None in a typed column: undo the part of the row appended, then append it with NULLs.
        n = min(len(c) for c in self._cols)
        for c in self._cols:
            if len(c) > n:
                c.pop()
        for c, v in zip(self._cols, values):
            c.append(NULL if v is None and not isinstance(c, list) else v)

    def take(self) -> Rows | None:
        """Return the buffered samples as plain columns and empty the buffer (None if it is empty)."""
        with self._lock:
            cols, self._cols = self._cols, self._new()
        n = len(cols[0]) if cols else 0
        if n == 0:
            return None
        return Rows(n, dict(zip(self._names, cols)), dict(self._constants))


class _Shared:
    """_Shared is the state every tagged view of one node's recorder shares."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.lock = threading.Lock()
        self.buffers: list[Columns] = []
        self.held: list[Item] = []
        self.result_stream = ResultStream()


class Recorder:
    """Sends a node's data items to its sink, streaming or buffering each.

    Runners use ``log``, ``error``, ``file``, ``send`` and ``columns``; the node
    runtime calls ``flush`` periodically and ``close`` when its tree ends. A
    recorder carries a ``tag``, the type of the runner it records for (as
    antler's ``WithTag``): :meth:`tagged` returns a view of the same recorder
    under another tag, so logs and errors are tagged without any runner
    spelling its own type.
    """

    def __init__(self, node_id: str, sink: Sink, tag: str = "node") -> None:
        self.node_id = node_id
        self.tag = tag
        self._shared = _Shared(sink)

    def tagged(self, tag: str) -> Recorder:
        """Return a view of this recorder (same sink, buffers and result stream) with another tag."""
        view = Recorder.__new__(Recorder)
        view.node_id, view.tag, view._shared = self.node_id, tag, self._shared
        return view

    @property
    def result_stream(self) -> ResultStream:
        """For every view of the recorder, what streams now and what waits for close."""
        return self._shared.result_stream

    @result_stream.setter
    def result_stream(self, value: ResultStream) -> None:
        self._shared.result_stream = value

    def send(self, item: Item) -> None:
        """Stream the item now, or holds it until close, per the result stream."""
        shared = self._shared
        with shared.lock:
            if shared.result_stream.streams(item):
                shared.sink(item)
            else:
                shared.held.append(item)

    def log(self, text: str, tag: str | None = None) -> None:
        """Record a log entry with the node time, under this recorder's tag unless another is given."""
        self.send(LogEntry(now(), self.node_id, tag or self.tag, text))

    def error(self, message: str, tag: str | None = None) -> Error:
        """Record and return an Error with the node time, under this recorder's tag unless another is given."""
        err = Error(now(), self.node_id, tag or self.tag, message)
        self.send(err)
        return err

    def file(self, name: str, data: bytes) -> None:
        """Record a chunk of a file for the test's result folder."""
        self.send(FileData(name, data, self.node_id))

    def columns(self, kind: str, flow: str, **constants: Any) -> Columns:
        """Return a new buffer for samples of kind on flow.

        Constant columns (e.g. ``server=True``) are given once here, not per sample.
        """
        cols = Columns(kind, flow, self._ship, **constants)
        with self._shared.lock:
            self._shared.buffers.append(cols)
        return cols

    def _ship(self, cols: Columns) -> None:
        batch = cols.take()
        if batch is not None:
            self.send(Batch(cols.kind, cols.flow, batch, self.node_id))

    def flush(self) -> None:
        """Ship every non-empty buffer as a batch."""
        with self._shared.lock:
            buffers = list(self._shared.buffers)
        for cols in buffers:
            self._ship(cols)

    def close(self) -> None:
        """Flush the buffers and send the items held back by the result stream."""
        self.flush()
        shared = self._shared
        with shared.lock:
            held, shared.held = shared.held, []
            shared.buffers.clear()
            for item in held:
                shared.sink(item)
