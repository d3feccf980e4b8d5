"""The packet server: receives packet flows, echoes those that ask, records what arrives."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import antler.node.runners.packet.sock as psock
from antler.node.feedback import Feedback
from antler.node.items import PacketInfo
from antler.node.kinds import NULL
from antler.node.runners.packet.clock import FlowClock
from antler.node.runners.packet.wire import ECHO, MAX_UDP_PAYLOAD, REPLY, BadPacket, parse, reply_to
from antler.node.sockopt import check_addr, sock_addr

if TYPE_CHECKING:
    from antler.node.context import Context
    from antler.node.recorder import Columns

MAX_FLOWS = 4096
"""MAX_FLOWS bounds the flows one server records, so forged flow IDs cannot exhaust memory."""
DUP_WINDOW = 1 << 16
"""DUP_WINDOW is how many recent sequence numbers per flow the duplicate check remembers."""
MAX_WINDOWS = 256
"""MAX_WINDOWS bounds the duplicate windows of a server (16 MB): the least recently used (flow, address) goes first."""
POLL_SECONDS = 0.1
"""POLL_SECONDS is how often the receive thread checks for a stop request."""


@dataclass(frozen=True)
class PacketServer:
    """The server for packet flows (UDP).

    It listens on ``listen_addr`` (``:port`` or ``host:port``), echoes each
    packet that requests it (same seq, flag REPLY) unless it is a duplicate,
    records every valid packet it receives and every reply it sends, and runs
    until the test's tree completes. A reply carries the request's DSCP and
    ECN as they arrived (read with IP_RECVTOS / IPV6_RECVTCLASS), as irtt's
    server does, so marking applies both ways; a request that arrived
    CE-marked is answered with the flow's last ECT codepoint (ECT(0) before
    any), since a reply must not leave already marked. ``listen_addr_key`` publishes the bound
    address as feedback for a client's ``addr_key``.
    """

    listen_addr: str = ":7778"
    listen_addr_key: str = ""
    protocol: str = "udp"
    max_packet_size: int = 1480

    def validate(self) -> None:
        """Raise ValueError for a bad protocol, address or packet size."""
        if self.protocol not in psock.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(psock.PROTOCOLS)}, not {self.protocol!r}")
        check_addr(self.listen_addr, self.protocol, "listen_addr", listen=True)
        if not 1 <= self.max_packet_size <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_packet_size must be between 1 and {MAX_UDP_PAYLOAD}")

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Bind the socket, start the receive thread and return; a canceler stops it."""
        family, sockaddr = psock.resolve(self.listen_addr, self.protocol, passive=True)
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind(sockaddr)
            psock.grow_rcvbuf(s)
            psock.enable_rx_timestamps(s)
            psock.enable_rx_tos(s)
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise OSError(f"bind {self.listen_addr} ({self.protocol}): {e.strerror or e}") from None
        except BaseException:
            s.close()
            raise
        # A link-local address is published with its interface (antler.node.sockopt.zoned).
        bound = sock_addr(s)
        core = _Server(ctx, s, self.max_packet_size, bound)
        core.start()
        ctx.on_cancel(core.stop)
        ctx.rec.log(f"listening on {bound} ({self.protocol}){' with HMAC' if ctx.hmac_key else ''}")
        return {self.listen_addr_key: bound} if self.listen_addr_key else {}


class _DupWindow:
    """_DupWindow remembers which of the last DUP_WINDOW sequence numbers of a flow were seen."""

    def __init__(self) -> None:
        self.top = -1
        self.bits = bytearray(DUP_WINDOW)

    def seen(self, seq: int) -> bool:
        """Mark seq and report whether it was seen before (too old counts as seen)."""
        if seq > self.top:
            gap = seq - self.top
            if gap >= DUP_WINDOW:
                self.bits[:] = bytes(DUP_WINDOW)
            else:
                # Clear the slots the window slides over, in at most two slices.
                start, end = (self.top + 1) % DUP_WINDOW, (seq + 1) % DUP_WINDOW
                if start < end:
                    self.bits[start:end] = bytes(end - start)
                else:
                    self.bits[start:] = bytes(DUP_WINDOW - start)
                    self.bits[:end] = bytes(end)
            self.top = seq
        elif seq <= self.top - DUP_WINDOW:
            return True
        i = seq % DUP_WINDOW
        if self.bits[i]:
            return True
        self.bits[i] = 1
        return False


class _Flow:
    """_Flow is what a server keeps per flow: its records."""

    def __init__(self, cols: Columns) -> None:
        self.cols = cols
        self.ect = 2  # ECT(0), until a request says otherwise

    def reply_tos(self, tos: int) -> int:
        """Return the TOS byte of the reply to a request that arrived with tos: the same, but never CE."""
        ecn = tos & 3
        if ecn == 3:
            ecn = self.ect  # CE: the codepoint the flow sends with, as last seen
        elif ecn:
            self.ect = ecn
        return (tos & 0xFC) | ecn


class _Windows:
    """_Windows holds the duplicate windows of a server, one per flow and client address, the least recent dropped.

    Windows are per address because a client that starts again with the same
    flow ID (a new socket) starts its sequence numbers again. They are
    bounded across all flows (MAX_WINDOWS, 64 KB each): bounded per flow, 4,096
    forged flows from 16 source ports took 4 GB (2.2 GB measured before a
    test stopped them, tests/test_fuzz.py).
    """

    def __init__(self, limit: int = MAX_WINDOWS) -> None:
        self.limit = limit
        self._windows: OrderedDict[tuple[str, object], _DupWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def get(self, flow: str, addr: object) -> _DupWindow:
        key = (flow, addr)
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) >= self.limit:
                self._windows.popitem(last=False)
            w = self._windows[key] = _DupWindow()
        else:
            self._windows.move_to_end(key)
        return w


class _Server:
    """_Server is the receive thread of a PacketServer and its counters."""

    def __init__(self, ctx: Context, s: socket.socket, max_packet_size: int, addr: str) -> None:
        self.ctx = ctx
        self.addr = addr
        self.sock = s
        self.key = ctx.hmac_key
        self.max_packet_size = max_packet_size
        self.clock = FlowClock()
        self.flows: dict[str, _Flow] = {}
        self.windows = _Windows()
        self.dropped: Counter[str] = Counter()
        self.received = 0
        self.echoed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="packet-server", daemon=True)
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """End the receive thread, close the socket and log what was dropped."""
        self._stop.set()
        await asyncio.to_thread(self._thread.join)
        self.sock.close()
        text = f"received {self.received} packets in {len(self.flows)} flows on {self.addr}, echoed {self.echoed}"
        if self.key is not None:
            bad = self.dropped["unsigned"] + self.dropped["bad-signature"]
            text += f"; dropped {bad} with a missing or bad signature"
        other = {k: v for k, v in self.dropped.items() if k not in ("unsigned", "bad-signature")}
        if other:
            text += "; dropped " + ", ".join(f"{v} {k}" for k, v in sorted(other.items()))
        self.ctx.rec.log(text)
        if self._failure is not None:
            raise RuntimeError(f"packet server failed: {self._failure}")

    def _flow(self, flow: str) -> _Flow | None:
        f = self.flows.get(flow)
        if f is None:
            if len(self.flows) >= MAX_FLOWS:
                return None
            cols = self.ctx.rec.columns("packet_io", flow, server=True)
            f = self.flows[flow] = _Flow(cols)
            self.ctx.rec.send(PacketInfo(self.clock.tinit, flow, True, self.ctx.node_id))
        return f

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # recorded when the server is stopped
            self._failure = e

    def _serve(self) -> None:
        s, key, clock = self.sock, self.key, self.clock
        rx_meta, tos_cmsg = psock.rx_meta, psock.tos_cmsg
        limit = self.max_packet_size
        # One byte more than the limit tells an oversized datagram from one that fits.
        buf = bytearray(limit + 1)
        view = memoryview(buf)
        trunc = psock.TRUNC
        while not self._stop.is_set():
            try:
                n, anc, msg_flags, addr = s.recvmsg_into([buf], psock.ANC_SIZE)
            except BlockingIOError:
                # Wait only when the queue is empty: under load, one syscall per packet.
                select.select([s], [], [], POLL_SECONDS)
                continue
            except OSError:
                if self._stop.is_set():
                    break
                self.dropped["receive-error"] += 1
                continue
            t_wall, tos, level = rx_meta(anc)
            t = clock.from_wall(t_wall)
            if n > limit or msg_flags & trunc:
                self.dropped["oversized"] += 1
                continue
            if tos < 0:
                tos = 0  # the kernel gave none: recorded as unmarked
            data = view[:n]
            try:
                flag, seq, flow = parse(data, key)
            except BadPacket as e:
                self.dropped[e.reason] += 1
                continue
            if flag & REPLY:
                self.dropped["unexpected-reply"] += 1
                continue
            f = self.flows.get(flow) or self._flow(flow)
            if f is None:
                self.dropped["too-many-flows"] += 1
                continue
            self.received += 1
            dup = self.windows.get(flow, addr).seen(seq)
            # Echo first and record after, so recording is not in the RTT.
            if flag & ECHO and not dup:
                out = reply_to(data, key)
                reply_tos = f.reply_tos(tos)
                t_out = clock.now()
                try:
                    if reply_tos:
                        s.sendmsg([out], tos_cmsg(level, reply_tos), 0, addr)
                    else:
                        s.sendto(out, addr)
                except OSError:
                    self.dropped["echo-send-error"] += 1
                    f.cols.append(t, seq, n, flag, False, NULL, tos)
                    continue
                f.cols.append(t, seq, n, flag, False, NULL, tos)
                f.cols.append(t_out, seq, n, out[3], True, NULL, reply_tos)
                self.echoed += 1
            else:
                f.cols.append(t, seq, n, flag, False, NULL, tos)
