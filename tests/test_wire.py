"""The node wire protocol over pipe_conn(): every item type, large batches, cancel, corrupt frames, versions.

A node is served on a thread of the test process (``serve`` over one end of
``pipe_conn()``), its parent is the same :class:`ChildHandle` the local and
SSH launchers use, on the other end; the test runners below cross pickled,
as any run tree does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from antler.config.test import parse_run
from antler.node import Control, Node
from antler.node.conn import Conn, pipe_conn
from antler.node.context import Context
from antler.node.feedback import Feedback
from antler.node.items import (
    Batch,
    Error,
    FileData,
    FlowStatus,
    Item,
    LogEntry,
    PacketInfo,
    Rows,
    RunnerError,
    StreamInfo,
    SysInfo,
)
from antler.node.launch.child import ChildHandle
from antler.node.launch.errors import LaunchError
from antler.node.process import ServeError, serve
from antler.node.recorder import Recorder
from antler.node.run import Run
from antler.node.schemas import SCHEMAS
from antler.node.wire import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    CorruptFrame,
    Kind,
    VersionMismatch,
    check_payload,
    decode_item,
    encode_item,
    frame,
    parse_header,
)

pytestmark = pytest.mark.no_netns

T0 = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass(frozen=True)
class EveryItem:
    """A test runner that records one item of every type and ``rows`` stream_io samples."""

    rows: int

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Record the items and return the feedback it got, plus its own."""
        ctx.rec.log("a log line")
        ctx.rec.file("f.bin", bytes(range(256)) * 4)
        ctx.rec.send(StreamInfo(T0, "s1", "up", "cubic", False, ctx.node_id, 1000))
        ctx.rec.send(PacketInfo(T0, "p1", True, ctx.node_id))
        ctx.rec.send(SysInfo(ctx.node_id, {"os": "Debian", "cpus": 2, "env": {"A": "1"}}))
        ctx.rec.error("an error, as data", "every")
        cols = ctx.rec.columns("stream_io", "s1", server=False)
        for i in range(self.rows):
            cols.append(i * 1000, i * 1448, True)
        return {"seen": feedback["given"], "rows": self.rows}


@dataclass(frozen=True)
class BigBatch:
    """A test runner that sends one Arrow batch of ``rows`` packet_io rows (tens of MB)."""

    rows: int

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Send the batch as a single item."""
        ctx.rec.send(Batch("packet_io", "p1", big_batch(self.rows), ctx.node_id))
        return {}


@dataclass(frozen=True)
class Announce:
    """A test runner that logs "started", then sleeps until canceled, logging "unwound" then."""

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Wait for its cancel."""
        ctx.rec.log("started")
        try:
            await asyncio.sleep(60)
        finally:
            ctx.rec.log("unwound")
        return {}


def big_batch(rows: int) -> pa.RecordBatch:
    """Return a packet_io batch of rows rows with distinct values."""
    import numpy as np

    n = np.arange(rows, dtype=np.int64)
    schema = SCHEMAS["packet_io"]
    arrays = [
        pa.array(["p1"] * rows),
        pa.array(n % 2 == 0),
        pa.array(n * 1000),
        pa.array(n),
        pa.array((n % 1400).astype(np.int32)),
        pa.array((n % 4).astype(np.uint8)),
        pa.array(n % 3 == 0),
        pa.array(n * 999),
        pa.array((n % 256).astype(np.uint8)),  # tos
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class Tap:
    """A Conn in front of the node's end that can write bytes of its own at the next frame boundary."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self._inject: bytes | None = None
        self._lock = threading.Lock()

    def inject(self, data: bytes) -> None:
        """Write data just before the next frame the node writes."""
        with self._lock:
            self._inject = data

    def read(self, n: int) -> bytes:
        return self.conn.read(n)

    def write(self, data: bytes | memoryview) -> None:
        with self._lock:
            if self._inject is not None and bytes(data[:2]) == MAGIC:
                self.conn.write(self._inject)
                self._inject = None
        self.conn.write(data)

    def close(self) -> None:
        self.conn.close()


class ThreadNode:
    """A node served on a thread over pipe_conn(); the NodeProcess of its handle."""

    def __init__(self, node_id: str) -> None:
        self.parent_end, node_end = pipe_conn()
        self.tap = Tap(node_end)
        self.control = Control()
        self.error: ServeError | None = None
        self.thread = threading.Thread(target=self._serve, args=(node_id,), daemon=True)
        self.thread.start()

    def _serve(self, node_id: str) -> None:
        try:
            serve(node_id, self.control, self.tap)
        except ServeError as e:
            self.error = e

    def wait(self, timeout: float) -> str | None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            return None
        return f"serve ended: {self.error}" if self.error else "serve returned"

    def kill(self) -> None:
        self.control.cancel()

    def release(self, facts: dict[str, Any], clean: bool) -> None:
        pass


@dataclass
class Wired:
    """A handle on a thread-served node, and the items it sent."""

    handle: ChildHandle
    node: ThreadNode
    items: list[Item]


async def wired(node_id: str = "w") -> Wired:
    """Start a node on a thread and its parent's handle, as a launcher would."""
    items: list[Item] = []
    node = ThreadNode(node_id)
    handle = ChildHandle(Node(id=node_id), items.append, node.parent_end, node, "test")
    await handle.start(netns=False)
    return Wired(handle, node, items)


async def wait_for(items: list[Item], pred: Any, timeout: float = 10.0) -> Item:
    """Return the first item matching pred, waiting for it up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in list(items):
            if pred(i):
                return i
        await asyncio.sleep(0.01)
    raise AssertionError(f"no such item within {timeout}s: {items}")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


# --- frames, byte for byte


def test_a_frame_is_a_12_byte_header_then_the_payload() -> None:
    chunks = frame(Kind.LOST, b"gone")
    raw = b"".join(bytes(c) for c in chunks)
    assert raw[:2] == b"AN" and raw[2] == PROTOCOL_VERSION and raw[3] == Kind.LOST
    assert int.from_bytes(raw[4:8], "big") == 4 and raw[12:] == b"gone"
    kind, length, crc = parse_header(raw[: HEADER.size])
    assert (kind, length) == (Kind.LOST, 4)
    check_payload(raw[12:], crc)
    with pytest.raises(CorruptFrame, match="CRC mismatch"):
        check_payload(b"gonf", crc)


def test_a_header_of_another_version_or_garbage_says_which() -> None:
    raw = bytes(b"".join(bytes(c) for c in frame(Kind.HEARTBEAT)))
    with pytest.raises(VersionMismatch, match="other end speaks version 9, this end 1"):
        parse_header(raw[:2] + bytes([9]) + raw[3:])
    with pytest.raises(CorruptFrame, match="bad magic"):
        parse_header(b"Welcome to r")
    with pytest.raises(CorruptFrame, match="unknown kind 99"):
        parse_header(raw[:3] + bytes([99]) + raw[4:])
    with pytest.raises(CorruptFrame, match="over the limit"):
        parse_header(raw[:4] + (2**31).to_bytes(4, "big") + raw[8:])


def test_every_item_type_round_trips_through_its_frame() -> None:
    items: list[Item] = [
        LogEntry(T0, "n", "system", "héllo"),
        Error(T0, "n", "stream", "boom"),
        FileData("out.txt", b"\x00\xffdata", "n"),
        StreamInfo(T0, "f", "down", "bbr", True, "n", 5),
        PacketInfo(T0, "p", False, "n"),
        SysInfo("n", {"os": "x", "cpus": 4}),
        FlowStatus(T0, "n", "f", "cancelled", "never started: a sibling failed"),
    ]
    for item in items:
        chunks = encode_item(item)
        payload = b"".join(bytes(memoryview(c)) for c in chunks[1:])
        kind, _, _ = parse_header(bytes(chunks[0]))
        assert decode_item(kind, payload) == item
    batch = big_batch(1000)
    chunks = encode_item(Batch("packet_io", "p1", batch, "n"))
    payload = b"".join(bytes(memoryview(c)) for c in chunks[1:])
    got = decode_item(Kind.BATCH, payload)
    assert isinstance(got, Batch) and got.batch.equals(batch) and (got.kind, got.node_id) == ("packet_io", "n")


def test_an_item_that_does_not_decode_is_a_corrupt_frame() -> None:
    with pytest.raises(CorruptFrame, match="bad item"):
        decode_item(Kind.ITEM, (5).to_bytes(4, "big") + b'{"ty')
    head = b'{"kind": "nope", "flow": "f", "node_id": "n"}'
    with pytest.raises(CorruptFrame, match="unknown kind 'nope'"):
        decode_item(Kind.BATCH, len(head).to_bytes(4, "big") + head)


# --- a node on the other end of pipe_conn()


def recorded_packet_io() -> Batch:
    """Return a packet_io Batch as a node's recorder ships it: three samples, one sched_t_ns missing."""
    items: list[Item] = []
    rec = Recorder("n", items.append)
    cols = rec.columns("packet_io", "p1", server=False)
    assert cols.names == ["t_ns", "seq", "length", "flags", "sent", "sched_t_ns", "tos"]
    cols.append(10, 0, 160, 1, True, 9, 0)
    cols.append(20, 1, 160, 1, True, None, 2)
    cols.append(30, 2, 1500, 0, False, 29, 255)
    rec.flush()
    (item,) = items
    assert isinstance(item, Batch)
    return item


PACKET_IO_ROWS = [
    {"flow": "p1", "server": False, "t_ns": 10, "seq": 0, "length": 160, "flags": 1, "sent": True, "sched_t_ns": 9,
     "tos": 0},
    {"flow": "p1", "server": False, "t_ns": 20, "seq": 1, "length": 160, "flags": 1, "sent": True,
     "sched_t_ns": None, "tos": 2},
    {"flow": "p1", "server": False, "t_ns": 30, "seq": 2, "length": 1500, "flags": 0, "sent": False,
     "sched_t_ns": 29, "tos": 255},
]  # fmt: skip
"""PACKET_IO_ROWS are recorded_packet_io's samples as the stored table has them (NULL is a null)."""


def payload_of(chunks: list[Any]) -> bytes:
    """Return the payload of an encoded frame."""
    return b"".join(bytes(memoryview(c).cast("B")) for c in chunks[1:])


def test_a_node_ships_plain_columns_and_the_driver_makes_the_arrow_batch() -> None:
    item = recorded_packet_io()
    assert isinstance(item.data, Rows) and item.data.constants == {"server": False, "flow": "p1"}
    assert isinstance(item.data.columns["t_ns"], array), "no Python object per sample"
    got = decode_item(Kind.BATCH, payload_of(encode_item(item)))
    assert isinstance(got, Batch) and isinstance(got.data, Rows) and got.num_rows == 3
    assert got.batch.schema.equals(SCHEMAS["packet_io"]) and got.batch.to_pylist() == PACKET_IO_ROWS


def test_a_batch_from_a_node_of_the_other_byte_order_decodes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    item = recorded_packet_io()
    other = "big" if sys.byteorder == "little" else "little"
    swapped: dict[str, Any] = {}
    for name, values in item.rows.columns.items():
        swapped[name] = array(values.typecode, values) if isinstance(values, array) else values
        if isinstance(values, array):
            swapped[name].byteswap()
    foreign = Batch("packet_io", "p1", Rows(3, swapped, item.rows.constants), "n")
    with monkeypatch.context() as m:
        m.setattr(sys, "byteorder", other)  # what a node of the other byte order writes
        payload = payload_of(encode_item(foreign))
    got = decode_item(Kind.BATCH, payload)
    assert isinstance(got, Batch) and got.batch.to_pylist() == PACKET_IO_ROWS


def test_a_batch_frame_cut_short_or_of_the_wrong_columns_is_a_corrupt_frame() -> None:
    payload = payload_of(encode_item(recorded_packet_io()))
    with pytest.raises(CorruptFrame, match="cut short in column 'tos'"):
        decode_item(Kind.BATCH, payload[:-1])
    n = int.from_bytes(payload[:4], "big")
    head = json.loads(payload[4 : 4 + n])
    head["columns"][0][1] = "d"
    bad = json.dumps(head).encode()
    with pytest.raises(CorruptFrame, match="column 't_ns' is 'd', not 'q'"):
        decode_item(Kind.BATCH, len(bad).to_bytes(4, "big") + bad + payload[4 + n :])
    head["columns"][0][1], head["rows"] = "q", 4
    bad = json.dumps(head).encode()
    with pytest.raises(CorruptFrame, match="a packet_io batch of 4 rows whose column 't_ns' has 3"):
        decode_item(Kind.BATCH, len(bad).to_bytes(4, "big") + bad + payload[4 + n :])


def test_a_run_crosses_with_its_feedback_and_every_item_comes_back(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[Feedback, list[Item], dict[str, Any]]:
        w = await wired()
        try:
            out = await w.handle.run(Run(sleep=EveryItem(200_000)), {"given": "10.77.0.1:5000"})  # type: ignore[arg-type]
            await w.handle.cleanup()
        finally:
            await w.handle.close()
        assert w.node.error is None
        return out, w.items, w.handle.facts

    out, items, facts = loop.run_until_complete(main())
    assert out == {"seen": "10.77.0.1:5000", "rows": 200_000}
    assert facts["launcher"] == "test" and facts["same_clock"] and facts["clock_rtt_ns"] > 0
    by_type = {type(i).__name__ for i in items}
    assert by_type >= {"LogEntry", "Error", "FileData", "StreamInfo", "PacketInfo", "SysInfo", "Batch"}
    assert StreamInfo(T0, "s1", "up", "cubic", False, "w", 1000) in items
    (f,) = [i for i in items if isinstance(i, FileData)]
    assert f.data == bytes(range(256)) * 4
    batches = [i for i in items if isinstance(i, Batch)]
    rows = sum(b.batch.num_rows for b in batches)
    assert rows == 200_000
    # 200,000 samples crossed in a handful of Arrow batches (the recorder's 65,536-row buffers), not one by one.
    assert len(batches) <= 5
    total = pa.Table.from_batches([b.batch for b in batches]).column("total_bytes")
    assert total[-1].as_py() == 199_999 * 1448


def test_a_large_batch_crosses_whole(loop: asyncio.AbstractEventLoop) -> None:
    rows = 1_000_000  # 31 MB of packet_io in one frame

    async def main() -> list[Item]:
        w = await wired()
        try:
            await w.handle.run(Run(sleep=BigBatch(rows)), {})  # type: ignore[arg-type]
        finally:
            await w.handle.close()
        return w.items

    (got,) = [i for i in loop.run_until_complete(main()) if isinstance(i, Batch)]
    assert got.batch.equals(big_batch(rows))


def test_cancel_mid_run_unwinds_the_run_on_the_node_which_keeps_serving(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[float, Feedback, list[str]]:
        w = await wired()
        try:
            task = asyncio.ensure_future(w.handle.run(Run(sleep=Announce()), {}))  # type: ignore[arg-type]
            await wait_for(w.items, lambda i: isinstance(i, LogEntry) and i.text == "started")
            start = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            took = time.monotonic() - start
            again = await w.handle.run(parse_run({"sleep": "1ms"}), {"k": 1})
        finally:
            await w.handle.close()
        return took, again, [i.text for i in w.items if isinstance(i, LogEntry)]

    took, again, logs = loop.run_until_complete(main())
    assert took < 5
    # The run on the node unwound before the cancel returned: its finally block ran there,
    # and the runner said it was canceled (nothing told this caller's cancel why).
    assert logs == ["started", "unwound", "canceled: the run was canceled"]
    assert again == {}


def test_a_corrupt_frame_from_the_node_ends_it_with_an_error_saying_so(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[list[Item], str]:
        w = await wired("cor")
        assert w.handle.lost is not None
        w.node.tap.inject(b"\x00garbage\x00garbage")
        message = await asyncio.wait_for(w.handle.lost, 10)
        with pytest.raises(RunnerError, match="corrupt frame"):
            await w.handle.run(parse_run({"sleep": "1ms"}), {})
        await w.handle.close()
        return w.items, message

    items, message = loop.run_until_complete(main())
    assert "node 'cor': corrupt frame: bad magic" in message
    (err,) = [i for i in items if isinstance(i, Error)]
    assert err.node_id == "cor" and err.message == message


def test_a_frame_of_another_version_ends_the_node_with_an_error_saying_so(loop: asyncio.AbstractEventLoop) -> None:
    future = b"".join(bytes(c) for c in frame(Kind.HEARTBEAT))
    future = future[:2] + bytes([PROTOCOL_VERSION + 1]) + future[3:]

    async def main() -> str:
        w = await wired("ver")
        assert w.handle.lost is not None
        w.node.tap.inject(future)
        message = await asyncio.wait_for(w.handle.lost, 10)
        await w.handle.close()
        return message

    message = loop.run_until_complete(main())
    assert message.startswith("node 'ver': protocol version mismatch: the other end speaks version 2, this end 1")


def test_a_node_that_speaks_another_version_fails_its_launch(loop: asyncio.AbstractEventLoop) -> None:
    parent_end, node_end = pipe_conn()
    future = b"".join(bytes(c) for c in frame(Kind.HEARTBEAT))
    node_end.write(future[:2] + bytes([7]) + future[3:])

    class Gone:
        def wait(self, timeout: float) -> str | None:
            return "exit status 0"

        def kill(self) -> None:
            node_end.close()

        def release(self, facts: dict[str, Any], clean: bool) -> None:
            pass

    async def main() -> None:
        handle = ChildHandle(Node(id="old"), lambda i: None, parent_end, Gone(), "test")
        await handle.start(netns=False)

    with pytest.raises(LaunchError, match="node 'old': protocol version mismatch: the other end speaks version 7"):
        loop.run_until_complete(main())


def test_a_node_whose_stream_ends_is_lost_with_an_error_naming_it(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[str, float]:
        w = await wired("dies")
        assert w.handle.lost is not None
        task = asyncio.ensure_future(w.handle.run(Run(sleep=Announce()), {}))  # type: ignore[arg-type]
        await wait_for(w.items, lambda i: isinstance(i, LogEntry) and i.text == "started")
        start = time.monotonic()
        w.node.tap.conn.close()  # the node's end of the stream goes away
        message = await asyncio.wait_for(w.handle.lost, 10)
        with pytest.raises(RunnerError):
            await task
        took = time.monotonic() - start
        w.node.kill()
        await w.handle.close()
        return message, took

    message, took = loop.run_until_complete(main())
    assert message.startswith("node 'dies' ended unexpectedly")
    assert took < 10


def test_the_node_stops_on_a_corrupt_frame_from_its_parent() -> None:
    parent_end, node_end = pipe_conn()
    errors: list[ServeError] = []

    def run() -> None:
        try:
            serve("n", Control(), node_end)
        except ServeError as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    parent_end.write(b"Welcome to the router!\n")
    t.join(20)
    assert not t.is_alive()
    (e,) = errors
    assert "from the parent: corrupt frame: bad magic b'Welcome '" in str(e)
    parent_end.close()
    while parent_end.read(65536):
        pass


def test_closing_stdio_conn_closes_only_stdout() -> None:
    code = (
        "import os, sys\n"
        "from antler.node import stdio_conn\n"
        "c = stdio_conn()\n"
        "c.write(b'framed')\n"
        "print('a stray print goes to stderr')\n"
        "c.close()\n"
        "sys.stderr.write('still reading: ' + c.read(5).decode() + '\\n')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdin is not None
    # The other end sees the end of stdout while the process still reads stdin.
    assert proc.stdout.read() == b"framed"
    _, err = proc.communicate(b"hello", timeout=30)
    assert proc.returncode == 0, err
    assert err.decode().splitlines() == ["a stray print goes to stderr", "still reading: hello"]
