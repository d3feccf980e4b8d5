"""The packet client: sends a flow's packets on a precise schedule and records replies."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antler.node import hmac
from antler.node.context import Context
from antler.node.feedback import Feedback
from antler.node.flow import check_flow
from antler.node.items import PacketInfo
from antler.node.recorder import Columns
from antler.node.runners.packet import sock as psock
from antler.node.runners.packet import timer
from antler.node.runners.packet.clock import FlowClock, warm_up_arrow
from antler.node.runners.packet.sender import PacketSenders, SendPlan
from antler.node.runners.packet.wire import (
    FIXED_LEN,
    MAX_UDP_PAYLOAD,
    BadPacket,
    Packet,
    PacketFlag,
    PacketHeader,
    decode,
    header_len,
)

TAG = "packet_client"
START_DELAY_NS = 5_000_000
"""START_DELAY_NS puts the first deadline a little ahead, so thread start-up is not a send-time error."""
LATE_MIN_S, LATE_MAX_S, LATE_UNKNOWN_S = 0.2, 3.0, 1.0
"""After the last send, replies are awaited for 4x the largest RTT seen, within [LATE_MIN_S, LATE_MAX_S],
or LATE_UNKNOWN_S if no reply came at all (a lost server gives loss figures, not a hang)."""
RING = 1 << 16
"""RING is how many recent sends the client remembers to match replies for the late-reply bound."""
POLL_SECONDS = 0.1
_SEQ = struct.Struct("!Q")


@dataclass(frozen=True)
class PacketClient:
    """PacketClient is the client for packet flows (UDP).

    It sends to ``addr`` (``host:port``), or to the address found in the
    feedback under ``addr_key``, with every sender in ``sender`` running
    concurrently on the flow ``flow``. ``dscp`` and ``ecn`` set the IP TOS or
    IPv6 traffic class; ``sockopt`` sets further socket options.
    """

    flow: str = ""
    addr: str = ""
    addr_key: str = ""
    protocol: str = "udp"
    max_packet_size: int = 1480
    dscp: int = 0
    ecn: int = 0
    sockopt: tuple[psock.Sockopt, ...] = ()
    sender: tuple[PacketSenders, ...] = ()

    def validate(self, path: str) -> None:
        """Validate checks the flow ID, address, protocol, TOS bits and senders."""
        check_flow(self.flow)
        if not self.addr and not self.addr_key:
            raise ValueError("packet_client needs addr or addr_key")
        if self.addr:
            psock.split_addr(self.addr)
        if self.protocol not in psock.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(psock.PROTOCOLS)}, not {self.protocol!r}")
        if not 1 <= self.max_packet_size <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_packet_size must be between 1 and {MAX_UDP_PAYLOAD}")
        if not 0 <= self.dscp <= 63:
            raise ValueError("dscp must be between 0 and 63")
        if not 0 <= self.ecn <= 3:
            raise ValueError("ecn must be between 0 and 3")
        if not self.sender:
            raise ValueError("packet_client needs at least one sender")
        for s in self.sender:
            for n in s.sender().length:
                if n > self.max_packet_size:
                    raise ValueError(f"packet length {n} is above max_packet_size {self.max_packet_size}")

    def expected_seconds(self) -> float:
        """Expected_seconds is the longest sender's duration plus the shortest late-reply wait."""
        return max(s.sender().expected_seconds() for s in self.sender) + LATE_MIN_S

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Run sends the flow, waits for late replies within a bound, and returns."""
        addr = self.addr or str(feedback.get(self.addr_key, ""))
        if not addr:
            raise ValueError(f"flow {self.flow}: no address in feedback key {self.addr_key!r}")
        signed = ctx.hmac_key is not None
        hlen = header_len(self.flow, signed)
        for ps in self.sender:
            short = [n for n in ps.sender().length if n < hlen]
            if short:
                raise ValueError(
                    f"flow {self.flow}: packet length {short[0]} is shorter than the header ({hlen} bytes)"
                )
        family, sockaddr = psock.resolve(addr, self.protocol, passive=False)
        warm_up_arrow()
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            psock.set_tos(s, family, self.dscp, self.ecn)
            for opt in self.sockopt:
                opt.apply(s)
            psock.grow_rcvbuf(s)
            psock.enable_rx_timestamps(s)
            s.settimeout(POLL_SECONDS)
            # Bind now so replies to the very first packet have a socket to land on.
            s.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
        except BaseException:
            s.close()
            raise
        flow = _Flow(ctx, self, s, sockaddr)
        try:
            await flow.run()
        finally:
            await flow.close()
        return {}


class _Flow:
    """_Flow is one running PacketClient: a sender thread, a receiver thread and their shared state."""

    def __init__(self, ctx: Context, spec: PacketClient, s: socket.socket, sockaddr: Any) -> None:
        self.ctx = ctx
        self.spec = spec
        self.sock = s
        self.sockaddr = sockaddr
        self.key = ctx.hmac_key
        self.clock = FlowClock()
        ctx.rec.send(PacketInfo(self.clock.tinit, spec.flow, False, ctx.node_id))
        self.cols: Columns = ctx.rec.columns("packet_io", spec.flow, server=False)
        self.sent = 0
        self.echo_sent = 0
        self.replies = 0
        self.max_rtt_ns = 0
        self.errors: Counter[str] = Counter()
        self._ring_seq = [-1] * RING
        self._ring_t = [0] * RING
        self._ring_replied = bytearray(RING)
        self._stop = threading.Event()
        self._recv_stop = threading.Event()
        self._sender_error: BaseException | None = None
        self._done_cb: Callable[[], object] = lambda: None
        self._receiver = threading.Thread(target=self._receive_loop, name=f"packet-recv-{spec.flow}", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"packet-send-{spec.flow}", daemon=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        self._done_cb = lambda: loop.call_soon_threadsafe(finished)
        self._receiver.start()
        self._sender.start()
        await done
        if self._sender_error is not None:
            raise RuntimeError(f"flow {self.spec.flow}: sending failed: {self._sender_error}")
        if self.echo_sent:
            await self._await_replies()

    async def _await_replies(self) -> None:
        if self.max_rtt_ns:
            bound = min(max(4 * self.max_rtt_ns / 1e9, LATE_MIN_S), LATE_MAX_S)
        else:
            bound = LATE_UNKNOWN_S
        end = time.monotonic() + bound
        while self.replies < self.echo_sent and time.monotonic() < end:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._stop.set()
        self._recv_stop.set()
        for t in (self._sender, self._receiver):
            if t.is_alive():
                await asyncio.to_thread(t.join)
        self.sock.close()
        text = f"flow {self.spec.flow}: sent {self.sent} packets"
        if self.echo_sent:
            text += f", {self.replies} of {self.echo_sent} echo requests answered"
        if self.errors:
            text += "; " + ", ".join(f"{v} {k}" for k, v in sorted(self.errors.items()))
        self.ctx.rec.log(text, TAG)

    def _send_loop(self) -> None:
        try:
            self._send()
        except BaseException as e:
            self._sender_error = e
        finally:
            self._done_cb()

    def _send(self) -> None:
        clock_timer = timer.HybridTimer()
        clock_timer.setup()
        spec, key, clock, cols = self.spec, self.key, self.clock, self.cols
        s, sockaddr = self.sock, self.sockaddr
        flow_len = len(spec.flow)
        tag_at = FIXED_LEN + flow_len
        templates: dict[tuple[int, bool], bytes] = {}
        # Merge the senders' plans into one time-ordered schedule, so sequence
        # numbers follow send order across senders.
        heap: list[tuple[int, int, int, bool]] = []
        plans: list[SendPlan] = [ps.sender().plan() for ps in spec.sender]
        for i, plan in enumerate(plans):
            first = next(plan, None)
            if first is not None:
                heap.append((first[0], i, first[1], first[2]))
        heapq.heapify(heap)
        start = time.monotonic_ns() + START_DELAY_NS
        ring_seq, ring_t, ring_replied = self._ring_seq, self._ring_t, self._ring_replied
        stop = self._stop
        seq = 0
        while heap:
            offset, i, length, echo = heapq.heappop(heap)
            tpl = templates.get((length, echo))
            if tpl is None:
                flag = PacketFlag.ECHO if echo else PacketFlag(0)
                tpl = templates[(length, echo)] = Packet(PacketHeader(flag, 0, spec.flow), length).encode(key)
            buf = bytearray(tpl)
            _SEQ.pack_into(buf, 4, seq)
            if key is not None:
                hmac.sign_in_place(key, buf, tag_at)
            deadline = start + offset
            now = time.monotonic_ns()
            # Sleep in slices so a cancel is seen within POLL_SECONDS.
            while deadline - now > timer.MAX_SPIN_NS + int(POLL_SECONDS * 1e9):
                time.sleep(POLL_SECONDS)
                if stop.is_set():
                    return
                now = time.monotonic_ns()
            now = clock_timer.wait_until(deadline)
            t = clock.from_mono(now)
            # The reply may be handled before sendto returns: note the send first.
            slot = seq % RING
            ring_t[slot] = t
            ring_seq[slot] = seq
            ring_replied[slot] = 0
            try:
                s.sendto(buf, sockaddr)
            except OSError as e:
                ring_seq[slot] = -1
                self.errors[f"send errors ({e.strerror or e})"] += 1
            else:
                cols.append(t, seq, length, buf[3], True, clock.from_mono(deadline))
                self.sent += 1
                if echo:
                    self.echo_sent += 1
            seq += 1
            if stop.is_set():
                return
            nxt = next(plans[i], None)
            if nxt is not None:
                heapq.heappush(heap, (nxt[0], i, nxt[1], nxt[2]))

    def _receive_loop(self) -> None:
        with contextlib.suppress(OSError):
            self._receive()

    def _receive(self) -> None:
        s, key, clock, cols, flow = self.sock, self.key, self.clock, self.cols, self.spec.flow
        limit = self.spec.max_packet_size
        buf = bytearray(limit + 1)
        view = memoryview(buf)
        ring_seq, ring_t, ring_replied = self._ring_seq, self._ring_t, self._ring_replied
        reply = PacketFlag.REPLY
        while not self._recv_stop.is_set():
            try:
                n, anc, msg_flags, _ = s.recvmsg_into([buf], psock.ANC_SIZE)
            except TimeoutError:
                continue
            except OSError:
                if self._recv_stop.is_set():
                    return
                self.errors["receive errors"] += 1
                continue
            t = clock.from_wall(psock.rx_time_ns(anc))
            if n > limit or msg_flags & socket.MSG_TRUNC:
                self.errors["oversized packets dropped"] += 1
                continue
            try:
                p = decode(view[:n], key)
            except BadPacket as e:
                self.errors[f"invalid packets dropped ({e.reason})"] += 1
                continue
            h = p.header
            if not h.flag & reply or h.flow != flow:
                self.errors["unexpected packets dropped"] += 1
                continue
            cols.append(t, h.seq, n, int(h.flag), False, None)
            slot = h.seq % RING
            if ring_seq[slot] == h.seq and not ring_replied[slot]:
                ring_replied[slot] = 1
                self.replies += 1
                rtt = t - ring_t[slot]
                if rtt > self.max_rtt_ns:
                    self.max_rtt_ns = rtt
