"""The data phase of one end of a stream flow, on a dedicated thread.

Each end moves its data in a loop of blocking ``send`` / ``recv_into`` calls
on a preallocated buffer, on its own thread: the calls release the GIL, so the
event loop stays free and the loop costs little more than iperf3's C loop
(see bench/README.md). The node's asyncio loop only starts the thread and
awaits its end.

Samples go into the recorder's columnar buffers straight from the thread
(``Columns.append`` is thread-safe). The sample interval is honoured by
comparing ``time.monotonic_ns()`` after each call, which is cheaper than the
call itself. TCP_INFO is sampled by a second, mostly sleeping thread, so a
send blocked on a full buffer never delays a sample.

Stopping: the socket has SO_SNDTIMEO / SO_RCVTIMEO set to POLL_SECONDS, so a
blocked call returns in time for the duration to be honoured at any rate;
cancellation sets a stop flag and shuts the socket down, which wakes a blocked
call at once. A peer that vanishes without a FIN or RST (its packets silently
dropped) fails the flow LINGER_SECONDS after its duration, on either end,
rather than leaving it, or the server's connection, waiting for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from antler.node.items import sockaddr_text
from antler.node.runners.stream.sock import TCP_INFO_COLUMNS, read_tcp_info
from antler.node.runners.stream.transfer import Stream

if TYPE_CHECKING:
    from antler.node.context import Context
    from antler.node.recorder import Columns

# Several flows of one node pump from threads of one process, taking turns at
# the GIL around each send and recv. At CPython's default 5 ms switch
# interval, two Reno flows through a 50 Mbit/s bottleneck split it 21/27 to
# 20/28 Mbit/s over 20 s (flows in separate processes: 24/23); at 0.5 ms
# they split 22-23/25 (tests/test_science.py, three runs each).
GIL_SWITCH_SECONDS = 0.0005
POLL_SECONDS = 0.1
"""POLL_SECONDS bounds how long one blocking call may wait before the loop checks its clock and stop flag."""

STOP_WAIT_SECONDS = 5.0
"""STOP_WAIT_SECONDS is how long a canceled pump may take to end its thread."""

LINGER_SECONDS = 30.0
"""LINGER_SECONDS is how long a sender waits, after its last byte, for the receiver to close, and how long a
receiver waits past the flow's duration for the end: a peer gone without a FIN or RST fails the flow then."""


@dataclass(frozen=True)
class PumpParams:
    """Says which way one end moves data, and when the sender stops."""

    sender: bool
    duration_ns: int
    length: int = 0
    buf_len: int = 128 * 1024
    sample_io_interval_ns: int = 0
    tcp_info_interval_ns: int = 0


@dataclass(frozen=True)
class PumpResult:
    """How one end's data phase ended: bytes moved and whether it was stopped early."""

    total_bytes: int
    stopped: bool


class Pump:
    """Moves one end's data on its own thread, recording StreamIO (and TCP_INFO) samples.

    ``io`` is a ``stream_io`` buffer whose ``names`` are ``t_ns, total_bytes``;
    ``tcp_info``, if given, a ``tcp_info`` buffer sampled on the sender.
    ``t0`` is the ``time.monotonic_ns()`` matching the flow's StreamInfo tinit.
    Making one raises ValueError for buffers with other columns.
    """

    def __init__(
        self,
        sock: socket.socket,
        params: PumpParams,
        io: Columns,
        t0: int,
        tcp_info: Columns | None = None,
        name: str = "stream",
    ) -> None:
        if io.names != ["t_ns", "total_bytes"]:
            raise ValueError(f"stream_io buffer must take t_ns, total_bytes, not {io.names}")
        if tcp_info is not None and tcp_info.names != ["t_ns", *TCP_INFO_COLUMNS]:
            raise ValueError(f"tcp_info buffer columns {tcp_info.names} do not match TCP_INFO_COLUMNS")
        self.sock = sock
        self.params = params
        self.io = io
        self.tcp_info = tcp_info
        self.t0 = t0
        self.name = name
        self._stop = threading.Event()
        self._finished = threading.Event()

    def stop(self) -> None:
        """End the data phase now: it sets the stop flag and wakes a blocked call."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    @property
    def stopped(self) -> bool:
        """Whether stop was called."""
        return self._stop.is_set()

    async def run(self) -> PumpResult:
        """Move the data on a new thread and return when it ends.

        If the awaiting task is canceled, the pump is stopped and the thread
        awaited (briefly) before the cancellation goes on, so the samples taken
        so far are all in the buffers and the caller may close the socket.
        """
        if sys.getswitchinterval() > GIL_SWITCH_SECONDS:
            sys.setswitchinterval(GIL_SWITCH_SECONDS)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[PumpResult] = loop.create_future()

        def main() -> None:
            try:
                result = self._main()
            except BaseException as e:
                err = e
                _post(loop, done, lambda: done.set_exception(err))
            else:
                _post(loop, done, lambda: done.set_result(result))

        self.sock.setblocking(True)
        timeval = struct.pack("@ll", 0, int(POLL_SECONDS * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        thread = threading.Thread(target=main, name=self.name, daemon=True)
        thread.start()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait([done], timeout=STOP_WAIT_SECONDS)
            if done.done() and not done.cancelled():
                done.exception()  # consumed: the cancellation is what the caller sees
            raise

    def _main(self) -> PumpResult:
        finished = self._finished
        sampler = None
        if self.tcp_info is not None and self.params.tcp_info_interval_ns > 0:
            sampler = threading.Thread(target=self._sample_tcp_info, name=f"{self.name}-tcpinfo", daemon=True)
            sampler.start()
        try:
            total = self._send() if self.params.sender else self._recv()
        finally:
            finished.set()
            if sampler is not None:
                sampler.join()
                self._tcp_info_sample()
        return PumpResult(total, self._stop.is_set())

    def _send(self) -> int:
        p = self.params
        stop, append, send = self._stop, self.io.append, self.sock.send
        mono = time.monotonic_ns
        buf = memoryview(bytearray(p.buf_len))
        t0, interval = self.t0, p.sample_io_interval_ns
        end = t0 + p.duration_ns if p.duration_ns > 0 else 1 << 62
        remaining = p.length if p.length > 0 else -1
        total, sampled, next_sample = 0, 0, 0
        try:
            while not stop.is_set():
                chunk = buf if remaining < 0 or remaining >= p.buf_len else buf[:remaining]
                try:
                    n = send(chunk)
                except (BlockingIOError, TimeoutError):
                    n = 0  # SO_SNDTIMEO passed with the buffer still full
                except OSError:
                    if stop.is_set():
                        break
                    raise
                total += n
                now = mono()
                if now >= next_sample and n:
                    append(now - t0, total)
                    sampled, next_sample = total, now + interval
                if remaining > 0:
                    remaining -= n
                    if remaining == 0:
                        break
                if now >= end:
                    break
        finally:
            # The last count is recorded even when the flow ends in an error or is stopped.
            if total != sampled:
                append(mono() - t0, total)
        if not stop.is_set():
            self._finish_send()
        return total

    def _finish_send(self) -> None:
        """Signal the end of data and wait for the receiver to close its end.

        The receiver closes only once it has read everything, so the sender's
        end means the flow is complete, and closing cannot reset unread data.
        """
        sock, stop = self.sock, self._stop
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        scratch = bytearray(4096)
        while not stop.is_set():
            if time.monotonic() >= deadline:
                # Not a silent success: the data may never have arrived.
                raise TimeoutError(f"the receiver did not close within {LINGER_SECONDS:g}s of the last byte (gone?)")
            try:
                if sock.recv_into(scratch) == 0:
                    return
            except (BlockingIOError, TimeoutError):
                continue
            except OSError:
                if stop.is_set():
                    return
                raise

    def _recv(self) -> int:
        p = self.params
        stop, append, recv_into = self._stop, self.io.append, self.sock.recv_into
        mono = time.monotonic_ns
        buf = memoryview(bytearray(p.buf_len))
        t0, interval = self.t0, p.sample_io_interval_ns
        # A sender stops at the duration: no end long after it means the sender is gone.
        end = t0 + p.duration_ns + int(LINGER_SECONDS * 1e9) if p.duration_ns > 0 else 1 << 62
        total, sampled, next_sample = 0, 0, 0
        try:
            while True:
                try:
                    n = recv_into(buf)
                except (BlockingIOError, TimeoutError):
                    if stop.is_set():
                        break
                    if mono() > end:
                        raise TimeoutError(
                            f"no end of the flow {LINGER_SECONDS:g}s after its duration (the sender is gone?)"
                        ) from None
                    continue
                except OSError:
                    if stop.is_set():
                        break
                    raise
                if n == 0:
                    break
                total += n
                now = mono()
                if now >= next_sample:
                    append(now - t0, total)
                    sampled, next_sample = total, now + interval
        finally:
            if total != sampled:
                append(mono() - t0, total)
        return total

    def _sample_tcp_info(self) -> None:
        interval = self.params.tcp_info_interval_ns / 1e9
        finished = self._finished
        self._tcp_info_sample()
        while not finished.wait(interval):
            self._tcp_info_sample()

    def _tcp_info_sample(self) -> None:
        assert self.tcp_info is not None
        try:
            values = read_tcp_info(self.sock)
        except OSError:
            return  # the socket is already shut down: nothing more to see
        self.tcp_info.append(time.monotonic_ns() - self.t0, *values)


async def run_end(
    ctx: Context, sock: socket.socket, stream: Stream, params: PumpParams, server: bool, sockopts: str = ""
) -> None:
    """Record one end's StreamInfo and run its data phase, sampling as asked.

    ``sockopts`` is what the kernel granted otherwise than the config asked
    (:meth:`antler.node.sockopt.Sockopt.apply`'s notes, "; " between them).
    """
    info = replace(stream.info(server, ctx.node_id, params.length), sockopts=sockopts)
    with contextlib.suppress(OSError):  # a socket already reset has no peer: the addresses stay unknown
        info = replace(info, local=sockaddr_text(sock.getsockname()), remote=sockaddr_text(sock.getpeername()))
    t0 = time.monotonic_ns()
    ctx.rec.send(info)
    io = ctx.rec.columns("stream_io", stream.flow, server=server, sent=params.sender)
    tcp_info = None
    if params.sender and params.tcp_info_interval_ns > 0:
        tcp_info = ctx.rec.columns("tcp_info", stream.flow, server=server, cca=stream.cca)
    pump = Pump(sock, params, io, t0, tcp_info, name=f"{ctx.rec.tag}-{stream.flow}")
    result = await pump.run()
    if result.stopped:
        ctx.rec.log(f"flow {stream.flow}: stopped after {result.total_bytes} bytes")


def _post(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], fn: Callable[[], None]) -> None:
    def call() -> None:
        if not fut.done():
            fn()

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(call)
