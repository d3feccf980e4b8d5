"""The stream client: connects to a stream server and runs the client end of one flow."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import antler.node.compat as compat
from antler.node.feedback import Feedback
from antler.node.metric import Duration
from antler.node.runners.stream.addr import PROTOCOLS, check_protocol
from antler.node.runners.stream.header import Header, HeaderError, read_frame
from antler.node.runners.stream.pump import PumpParams, run_end
from antler.node.runners.stream.sock import get_cca, set_cca
from antler.node.runners.stream.transfer import Download, Transfer, Upload
from antler.node.sockopt import check_addr, set_tos, split_host_port, zoned
from antler.node.spec import set_fields

if TYPE_CHECKING:
    from antler.node.context import Context

CONNECT_TIMEOUT = Duration(10_000_000_000)


class StreamError(Exception):
    """A stream flow that failed: the message names the flow and the cause."""


@dataclass(frozen=True)
class StreamClient:
    """The client for stream flows: one upload or download to a stream server.

    The server is ``addr`` (``host:port``) or, if that is empty, the address
    found in the incoming feedback under ``addr_key``. ``protocol`` is ``tcp``,
    ``tcp4`` or ``tcp6``. A connect that gets no answer within
    ``connect_timeout`` fails the flow.
    """

    addr: str = ""
    addr_key: str = ""
    protocol: str = "tcp"
    upload: Upload | None = None
    download: Download | None = None
    connect_timeout: Duration = CONNECT_TIMEOUT
    flow_kind: ClassVar[str] = "stream"

    def validate(self) -> None:
        """Raise ValueError unless there is one transfer, a way to find the server, and a known protocol."""
        transfers = set_fields(self, among=("upload", "download"))
        if len(transfers) != 1:
            raise ValueError(
                f"stream_client needs exactly one of upload or download; found {' and '.join(transfers) or 'none'}"
            )
        if not self.addr and not self.addr_key:
            raise ValueError("stream_client needs addr or addr_key")
        check_protocol(self.protocol)
        if self.addr:
            check_addr(self.addr, self.protocol, "addr")
        if self.connect_timeout.ns <= 0:
            raise ValueError("connect_timeout must be positive")

    def transfer(self) -> Transfer:
        """Return the upload or download."""
        t = self.upload or self.download
        assert t is not None
        return t

    @property
    def flow(self) -> str:
        """The transfer's flow ID."""
        return self.transfer().flow

    def expected_seconds(self) -> float:
        """Return the transfer's duration."""
        return self.transfer().duration.seconds

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Connect, send the header and run the client end until the flow completes.

        Raises StreamError, naming the flow, when the server's address is
        missing or bad, the connect fails or times out (``connect_timeout``),
        a socket option is refused, the server refuses the header, or the
        transfer breaks.
        """
        t = self.transfer()
        flow = t.flow
        addr = self.addr
        if not addr:
            if self.addr_key not in feedback:
                keys = ", ".join(sorted(feedback)) or "none"
                raise StreamError(f"flow {flow}: no server address under feedback key {self.addr_key!r} (keys: {keys})")
            addr = str(feedback[self.addr_key])
        try:
            host, port = split_host_port(addr)
            check_addr(addr, self.protocol, "server address")
            host = zoned(host)
        except ValueError as e:
            raise StreamError(f"flow {flow}: {e}") from None
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host or "localhost", port, family=PROTOCOLS[self.protocol], type=socket.SOCK_STREAM
            )
        except OSError as e:
            raise StreamError(f"flow {flow}: resolving {addr} ({self.protocol}): {e.strerror or e}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sender = t.direction == "up"
            try:
                if sender and t.cca:
                    set_cca(sock, t.cca)
                if t.tos:
                    set_tos(sock, t.dscp, t.ecn)
                granted = [g for g in (opt.apply(sock) for opt in t.sockopt) if g]
                for g in granted:
                    ctx.rec.log(f"flow {flow}: {g}")
            except (ValueError, OSError) as e:
                raise StreamError(f"flow {flow}: {e}") from None
            await self._connect(sock, sockaddr, addr, flow)
            header = Header(
                flow=flow,
                direction=t.direction,
                cca=get_cca(sock) if sender else t.cca,
                duration_ns=t.duration.ns,
                length=t.length_bytes,
                sample_io_interval_ns=t.sample_io_interval.ns,
                tcp_info_interval_ns=t.tcp_info_interval.ns,
                buf_len=t.buf_len,
                tos=t.tos,
            )
            if ctx.hmac_key is not None:
                header = header.signed(ctx.hmac_key)
            try:
                await loop.sock_sendall(sock, header.encode())
                reply = await read_frame(sock, self.connect_timeout.seconds)
            except (HeaderError, OSError) as e:
                raise StreamError(f"flow {flow}: no valid reply from server {addr}: {e}") from None
            if "error" in reply:
                raise StreamError(f"flow {flow}: server {addr} refused it: {reply['error']}")
            cca = header.cca if sender else str(reply.get("cca", ""))
            params = PumpParams(
                sender=sender,
                duration_ns=t.duration.ns,
                length=t.length_bytes,
                buf_len=t.buf_len,
                sample_io_interval_ns=t.sample_io_interval.ns,
                tcp_info_interval_ns=t.tcp_info_interval.ns,
            )
            try:
                await run_end(ctx, sock, t.stream(cca), params, server=False, sockopts="; ".join(granted))
            except OSError as e:
                raise StreamError(f"flow {flow}: {'sending to' if sender else 'receiving from'} {addr}: {e}") from None
        finally:
            sock.close()
        return {}

    async def _connect(self, sock: socket.socket, sockaddr: tuple[object, ...], addr: str, flow: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with compat.timeout(self.connect_timeout.seconds):
                await loop.sock_connect(sock, sockaddr)
        except compat.AsyncTimeout:
            raise StreamError(f"flow {flow}: connect to {addr}: no answer within {self.connect_timeout}") from None
        except OSError as e:
            # asyncio's message repeats the address; the errno's text is the cause.
            cause = os.strerror(e.errno) if e.errno else str(e)
            raise StreamError(f"flow {flow}: connect to {addr}: {cause}") from None
