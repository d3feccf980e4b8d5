"""The stream server: accepts stream clients and runs the server end of each flow."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from antler.node.feedback import Feedback
from antler.node.metric import Duration
from antler.node.runners.stream.addr import PROTOCOLS, check_protocol, sockname
from antler.node.runners.stream.header import Header, HeaderError, frame, read_frame
from antler.node.runners.stream.pump import PumpParams, run_end
from antler.node.runners.stream.sock import CCAError, get_cca, set_cca
from antler.node.runners.stream.transfer import Stream
from antler.node.sockopt import check_addr, join_host_port, set_tos, split_host_port

if TYPE_CHECKING:
    from antler.node.context import Context

BACKLOG = 128
HEADER_TIMEOUT = Duration(10_000_000_000)


@dataclass(frozen=True)
class StreamServer:
    """The server for stream flows: it listens, then serves clients until the test ends.

    ``listen_addr`` is ``host:port`` or ``:port`` (all addresses); port 0
    picks a free port, which ``listen_addr_key`` puts into the returned
    feedback for a client's ``addr_key``. ``protocol`` is ``tcp``, ``tcp4`` or
    ``tcp6``. ``header_timeout`` is how long a new client may take to send its
    header. The runner returns once listening; clients are served
    concurrently until the test's tree completes.
    """

    listen_addr: str = ":0"
    listen_addr_key: str = ""
    protocol: str = "tcp"
    header_timeout: Duration = HEADER_TIMEOUT

    def validate(self) -> None:
        """Raise ValueError for a bad protocol or address, port 0 without listen_addr_key, or a header_timeout not above 0."""
        check_protocol(self.protocol)
        check_addr(self.listen_addr, self.protocol, "listen_addr", listen=True)
        _, port = split_host_port(self.listen_addr)
        if port == 0 and not self.listen_addr_key:
            raise ValueError("port 0 picks a free port: set listen_addr_key so a client can find it")
        if self.header_timeout.ns <= 0:
            raise ValueError("header_timeout must be positive")

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Bind and listen, register the canceler and return the feedback."""
        lsock = await _listen(self.listen_addr, self.protocol)
        addr = sockname(lsock)
        server = _Serving(self, ctx, lsock)
        ctx.on_cancel(server.cancel)
        server.start()
        ctx.rec.log(f"listening on {addr} ({self.protocol})")
        return {self.listen_addr_key: addr} if self.listen_addr_key else {}


async def _listen(listen_addr: str, protocol: str) -> socket.socket:
    host, port = split_host_port(listen_addr)
    family = PROTOCOLS[protocol]
    if host:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except OSError as e:
            raise OSError(f"listen on {listen_addr} ({protocol}): resolving {host}: {e.strerror or e}") from None
        candidates = [(f, sa) for f, _, _, _, sa in infos]
    elif family == socket.AF_INET:
        candidates = [(socket.AF_INET, ("0.0.0.0", port))]
    elif family == socket.AF_INET6:
        candidates = [(socket.AF_INET6, ("::", port))]
    else:
        # Like Go's "tcp" with ":port": one dual-stack socket, or IPv4 where IPv6 is off.
        candidates = [(socket.AF_INET6, ("::", port)), (socket.AF_INET, ("0.0.0.0", port))]
    last: OSError | None = None
    for fam, sa in candidates:
        try:
            sock = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as e:
            last = e
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if family == socket.AF_INET6 else 0)
            sock.bind(sa)
            sock.listen(BACKLOG)
            sock.setblocking(False)
            return sock
        except OSError as e:
            sock.close()
            last = e
            if e.errno == errno.EADDRINUSE:
                break
    reason = last.strerror if last is not None and last.strerror else str(last)
    raise OSError(f"listen on {listen_addr} ({protocol}): {reason}")


class _Serving:
    """_Serving is a listening server: its accept loop, its connections and their pumps."""

    def __init__(self, spec: StreamServer, ctx: Context, lsock: socket.socket) -> None:
        self.spec = spec
        self.ctx = ctx
        self.lsock = lsock
        self.addr = sockname(lsock)
        self.conns: set[asyncio.Task[None]] = set()
        self.accepting: asyncio.Task[None] | None = None
        # Clients dropped for bad input, by reason, with the first one's detail.
        self.dropped: Counter[str] = Counter()
        self.first_drop: dict[str, str] = {}

    def start(self) -> None:
        self.accepting = asyncio.ensure_future(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self.lsock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as e:
                # Out of descriptors or memory: record it, breathe, keep serving.
                self.ctx.rec.error(f"accept on {self.addr}: {e}")
                await asyncio.sleep(0.1)
                continue
            task = asyncio.ensure_future(self._serve(conn, join_host_port(*peer[:2])))
            self.conns.add(task)
            task.add_done_callback(self.conns.discard)

    async def _serve(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(False)
            try:
                header = Header.decode(await read_frame(conn, self.spec.header_timeout.seconds))
            except HeaderError as e:
                # Bad input from the network is not the test's error: the
                # client is dropped and counted (as the packet server counts
                # bad datagrams), and the counts are logged when it stops.
                self._drop(e.reason, f"client {peer}: {e}")
                return
            except OSError as e:
                self._drop("connection-error", f"client {peer}: {e}")
                return
            flow = header.flow
            key = self.ctx.hmac_key
            if key is not None and not header.verified(key):
                self._drop("bad-signature", f"client {peer}: flow {flow}: missing or bad HMAC signature")
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(conn, frame({"error": "missing or bad HMAC signature"}))
                return
            sender = header.direction == "down"
            try:
                if sender and header.cca:
                    set_cca(conn, header.cca)
                if sender and header.tos:
                    set_tos(conn, header.tos >> 2, header.tos & 3)
                cca = get_cca(conn) if sender else header.cca
            except (CCAError, OSError) as e:
                # The client reports it as its flow's error; here it is only logged.
                self.ctx.rec.log(f"flow {flow}: refused client {peer}: {e}")
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(conn, frame({"error": f"server node {self.ctx.node_id}: {e}"}))
                return
            await loop.sock_sendall(conn, frame({"ok": True, "cca": cca}))
            stream = Stream(flow, header.direction, cca)
            params = PumpParams(
                sender=sender,
                duration_ns=header.duration_ns,
                length=header.length,
                buf_len=header.buf_len,
                sample_io_interval_ns=header.sample_io_interval_ns,
                tcp_info_interval_ns=header.tcp_info_interval_ns,
            )
            await run_end(self.ctx, conn, stream, params, server=True)
        except OSError as e:
            # The client owns the flow's outcome (it may have been canceled);
            # a connection lost mid-flow is noted here, not failed twice.
            self.ctx.rec.log(f"client {peer}: connection ended: {e}")
        finally:
            conn.close()

    def _drop(self, reason: str, detail: str) -> None:
        self.dropped[reason] += 1
        self.first_drop.setdefault(reason, detail)

    async def cancel(self) -> None:
        """Stop accepting, end every flow in progress and close the listener."""
        if self.accepting is not None:
            self.accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.accepting
        self.lsock.close()
        conns = list(self.conns)
        for task in conns:
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
        if self.dropped:
            # Counts only (never a key); the first of each reason says what it looked like.
            counts = ", ".join(
                f"{n} {reason} (first: {self.first_drop[reason]})" for reason, n in sorted(self.dropped.items())
            )
            self.ctx.rec.log(f"dropped {self.dropped.total()} clients with bad input: {counts}")
        self.ctx.rec.log(f"stopped listening on {self.addr}")
