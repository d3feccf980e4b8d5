"""Byte streams between a parent and a child node, and the framed channel over them.

A :class:`Conn` is any reliable byte stream (antler's ``io.ReadWriteCloser``):
a child process's stdin and stdout, an SSH session's channel, the two ends of
:func:`pipe_conn`. A :class:`Channel` sends and receives the frames of
:mod:`antler.node.wire` over one, on two threads of its own, so a blocking
stream (paramiko's channels are) never stalls an event loop and a node's
writes never wait on its runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Optional, Protocol

from antler.node.items import Item
from antler.node.wire import HEADER, Chunk, Kind, check_payload, encode_item, parse_header

READ_SIZE = 256 * 1024
"""READ_SIZE is how much a channel asks its stream for at once."""
COALESCE_BYTES = 64 * 1024
"""COALESCE_BYTES: a frame's parts below this size are joined into one write (a frame header is 12 bytes)."""


class Conn(Protocol):
    """A reliable byte stream to the other node: blocking reads and writes, and close."""

    def read(self, n: int) -> bytes:
        """Return up to n bytes, blocking until some arrive; b"" at the end of the stream."""
        ...

    def write(self, data: bytes | memoryview) -> None:
        """Write all of data, raising OSError when the other end is gone."""
        ...

    def close(self) -> None:
        """End the writing direction; the other end reads the end of the stream."""
        ...


class _Stdio:
    """_Stdio is this process's stdin and stdout as a Conn."""

    def __init__(self) -> None:
        self._out = 1

    def read(self, n: int) -> bytes:
        return os.read(0, n)

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._out, view) :]

    def close(self) -> None:
        # /dev/null over fd 1 rather than closing it: a file opened later must not become stdout.
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
        finally:
            os.close(null)


def stdio_conn() -> Conn:
    """Return this process's stdin and stdout as a Conn; closing it closes only stdout.

    From then on Python's ``sys.stdout`` writes to stderr, so a stray
    ``print`` cannot corrupt the frames on fd 1.
    """
    sys.stdout = sys.stderr
    return _Stdio()


class _SocketConn:
    """_SocketConn is one end of a connected stream socket as a Conn; the socket closes once both ways end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._read_done = False
        self._write_done = False

    def read(self, n: int) -> bytes:
        try:
            data = self.sock.recv(n)
        except OSError:
            data = b""
        if not data:
            self._end(read=True)
        return data

    def write(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self._end(read=False)

    def _end(self, read: bool) -> None:
        with self._lock:
            if read:
                self._read_done = True
            else:
                self._write_done = True
            if self._read_done and self._write_done:
                self.sock.close()


def pipe_conn() -> tuple[Conn, Conn]:
    """Return two connected Conns: what one writes, the other reads (for tests and in-process nodes)."""
    a, b = socket.socketpair()
    return _SocketConn(a), _SocketConn(b)


FrameHandler = Callable[[Kind, bytes], None]
"""FrameHandler receives each frame's kind and payload, on the channel's reader thread."""
EndHandler = Callable[[Optional[BaseException]], None]
"""EndHandler is told, once, that the stream ended: None at a clean end, else why (a WireError, an OSError)."""


class Channel:
    """Sends and receives frames over a Conn, on a reader and a writer thread.

    ``send`` and ``send_item`` are thread-safe and never block: frames queue
    for the writer, which encodes items (a batch's sample columns too) off
    the caller's thread. ``close`` lets the queued frames out, then closes the
    stream.
    """

    def __init__(self, conn: Conn, name: str) -> None:
        self.conn = conn
        self.name = name
        self._out: queue.SimpleQueue[list[Chunk] | Item | None] = queue.SimpleQueue()
        self._buf = bytearray()
        self.write_error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name=f"{name}-writer", daemon=True)
        self._reader: threading.Thread | None = None
        self._closed = False
        self.last_read = time.monotonic()
        """last_read is when bytes last arrived (time.monotonic): a long frame in transit is a sign of life too."""
        self._writer.start()

    def start(self, on_frame: FrameHandler, on_end: EndHandler) -> None:
        """Read frames until the stream ends, handing each to on_frame, then calls on_end."""
        self._reader = threading.Thread(
            target=self._read_loop, args=(on_frame, on_end), name=f"{self.name}-reader", daemon=True
        )
        self._reader.start()

    def send(self, chunks: list[Chunk]) -> None:
        """Queue an encoded frame."""
        if not self._closed:
            self._out.put(chunks)

    def send_item(self, item: Item) -> None:
        """Queue a data item; the writer encodes it."""
        if not self._closed:
            self._out.put(item)

    def close(self) -> None:
        """Close the stream once the queued frames are written; it does not wait."""
        if not self._closed:
            self._closed = True
            self._out.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the writer has closed the stream; it returns whether it has."""
        self._writer.join(timeout)
        return not self._writer.is_alive()

    def join_reader(self, timeout: float | None = None) -> bool:
        """Wait until the reader has seen the end of the stream; it returns whether it has."""
        if self._reader is not None:
            self._reader.join(timeout)
            return not self._reader.is_alive()
        return True

    # --- threads

    def _write_loop(self) -> None:
        while True:
            msg = self._out.get()
            if msg is None:
                break
            if self.write_error is not None:
                continue  # the other end is gone: drop, but keep draining the queue
            try:
                chunks = msg if isinstance(msg, list) else encode_item(msg)
                for part in _coalesce(chunks):
                    self.conn.write(part)
            except Exception as e:
                self.write_error = e
        with contextlib.suppress(Exception):
            self.conn.close()

    def _read_loop(self, on_frame: FrameHandler, on_end: EndHandler) -> None:
        why: BaseException | None = None
        try:
            while True:
                header = self._read_exact(HEADER.size)
                if header is None:
                    break
                kind, length, crc = parse_header(header)
                payload = self._read_exact(length) if length else b""
                if payload is None:
                    raise EOFError("the stream ended inside a frame")
                check_payload(payload, crc)
                on_frame(kind, payload)
        except BaseException as e:
            why = e
        on_end(why)

    def _read_exact(self, n: int) -> bytes | None:
        buf = self._buf
        while len(buf) < n:
            chunk = self.conn.read(max(READ_SIZE, n - len(buf)))
            self.last_read = time.monotonic()
            if not chunk:
                if buf:
                    raise EOFError("the stream ended inside a frame")
                return None
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out


def _coalesce(chunks: list[Chunk]) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for c in chunks:
        view = memoryview(c).cast("B")  # a sample column's array: its bytes, so a write's count slices it right
        if view.nbytes < COALESCE_BYTES:
            small.append(view)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(view)
    if small:
        out.append(b"".join(small))
    return out
