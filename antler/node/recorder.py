"""The recorder: how runners emit logs, errors, files and measurements.

Measurements are appended to per-flow columnar buffers (:class:`Columns`) and
leave the node as Arrow record batches, never as one message per sample. The
node flushes the buffers every ``flush_interval`` and when its run tree ends.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from antler.node.filter import ResultStream
from antler.node.items import NULL, Batch, Error, FileData, Item, LogEntry, now
from antler.node.schemas import SCHEMAS

Sink = Callable[[Item], None]
"""Sink receives the data items of a node, in order; it must be thread-safe."""

BATCH_ROWS = 65536
"""BATCH_ROWS is the most rows a buffer holds before it is shipped."""


_TYPECODES = {
    pa.int64(): "q",
    pa.int32(): "i",
    pa.uint64(): "Q",
    pa.uint32(): "I",
    pa.uint8(): "B",
    pa.bool_(): "b",
    pa.float64(): "d",
}
"""_TYPECODES maps the Arrow types a column buffer holds natively to array module typecodes."""


class _Column:
    """_Column is one buffered column: a typed array (no Python object per value) or, for other types, a list.

    In an int64 column, :data:`NULL` (or None) is a missing value.
    """

    __slots__ = ("append", "type", "values")

    def __init__(self, type_: pa.DataType) -> None:
        self.type = type_
        code = _TYPECODES.get(type_)
        self.values: array[Any] | list[Any] = array(code) if code else []
        self.append: Callable[[Any], None] = self.values.append

    def __len__(self) -> int:
        return len(self.values)

    def arrow(self) -> pa.Array:
        """Convert the column: typed arrays without a per-value loop."""
        if isinstance(self.values, list):
            return pa.array(self.values, type=self.type)
        values = np.frombuffer(self.values, dtype=self.values.typecode)
        if self.type == pa.bool_():
            values = values.astype(bool)
        mask = values == NULL if self.type == pa.int64() else None
        return pa.array(values, type=self.type, mask=mask if mask is not None and mask.any() else None)


class Columns:
    """A columnar buffer of samples of one kind for one flow.

    Appending is thread-safe, so a dedicated sender thread (the packet runner's
    timer) can record without going through the event loop. Numeric and
    boolean columns are typed arrays, so a buffer holds no Python object per
    sample (the garbage collector never walks them), appending costs a C call
    per value, and turning it into a record batch holds the GIL for
    microseconds, not the milliseconds a conversion from lists takes: that
    pause would land in a packet sender's send times.
    """

    def __init__(self, kind: str, flow: str, ship: Callable[[Columns], None], **constants: Any) -> None:
        self.kind = kind
        self.flow = flow
        self.schema = SCHEMAS[kind]
        self._constants = constants | {"flow": flow}
        self._names = [n for n in self.schema.names if n not in self._constants]
        self._types = [self.schema.field(n).type for n in self._names]
        self._cols = self._new()
        self._lock = threading.Lock()
        self._ship = ship

    def _new(self) -> list[_Column]:
        return [_Column(t) for t in self._types]

    @property
    def names(self) -> list[str]:
        """Lists the columns passed to append, in order."""
        return list(self._names)

    def append(self, *values: Any) -> None:
        """Add one sample, with values in the order of ``names``."""
        with self._lock:
            cols = self._cols
            try:
                for col, v in zip(cols, values, strict=True):
                    col.append(v)
            except TypeError:
                self._append_nulls(values)
            full = len(cols[0].values) >= BATCH_ROWS
        if full:
            self._ship(self)

    def _append_nulls(self, values: tuple[Any, ...]) -> None:
        # A None in a typed column: undo the part of the row appended, then append it with NULLs.
        n = min(len(c) for c in self._cols)
        for c in self._cols:
            if len(c) > n:
                c.values.pop()
        for c, v in zip(self._cols, values, strict=True):
            c.append(NULL if v is None and not isinstance(c.values, list) else v)

    def take(self) -> pa.RecordBatch | None:
        """Return the buffered samples as a record batch and empty the buffer."""
        with self._lock:
            cols, self._cols = self._cols, self._new()
        n = len(cols[0]) if cols else 0
        if n == 0:
            return None
        arrays = []
        for f in self.schema:
            if f.name in self._constants:
                arrays.append(pa.repeat(pa.scalar(self._constants[f.name], type=f.type), n))
            else:
                arrays.append(cols[self._names.index(f.name)].arrow())
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


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
