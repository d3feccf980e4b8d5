"""The packet client: sends a flow's packets on a precise schedule and records replies."""

from __future__ import annotations

import asyncio
import heapq
import select
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
    REPLY,
    BadPacket,
    Packet,
    PacketFlag,
    PacketHeader,
    header_len,
    parse,
)
from antler.node.sockopt import Sockopt, set_tos, split_host_port

TAG = "packet_client"
START_DELAY_NS = 5_000_000
"""START_DELAY_NS puts the first deadline a little ahead, so thread start-up is not a send-time error."""
LATE_MIN_S, LATE_MAX_S, LATE_UNKNOWN_S = 0.2, 3.0, 1.0
"""After the last send, replies are awaited for 4x the largest RTT seen, within [LATE_MIN_S, LATE_MAX_S],
or LATE_UNKNOWN_S if no reply came at all (a lost server gives loss figures, not a hang)."""
RING = 1 << 16
"""RING is how many recent sends the client remembers to match replies for the late-reply bound."""
POLL_SECONDS = 0.1
"""POLL_SECONDS is the longest the I/O thread waits before checking for a cancel."""
DRAIN_SLACK_NS = 40_000
"""DRAIN_SLACK_NS: while spinning, a reply is handled only if the deadline is further away than this."""
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
    sockopt: tuple[Sockopt, ...] = ()
    sender: tuple[PacketSenders, ...] = ()

    def validate(self, path: str) -> None:
        """Validate checks the flow ID, address, protocol, TOS bits and senders."""
        check_flow(self.flow)
        if not self.addr and not self.addr_key:
            raise ValueError("packet_client needs addr or addr_key")
        if self.addr:
            split_host_port(self.addr)
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
            set_tos(s, self.dscp, self.ecn)
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
    """_Flow is one running PacketClient: one I/O thread that sends on schedule and receives between sends.

    Sending and receiving share one thread on purpose: two Python threads
    contend for the GIL, and a spinning sender starves a receiver (or the
    other way round) for up to the 5 ms switch interval. Here the thread
    waits in select() on the socket until shortly before each deadline,
    handles replies that arrive meanwhile, then spins to the deadline, still
    draining replies while there is slack. Receive times come from the
    kernel, so handling a reply a little later does not change its RTT.
    """

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
        self._error: BaseException | None = None
        self._done_cb: Callable[[], object] = lambda: None
        self._buf = bytearray(spec.max_packet_size + 1)
        self._view = memoryview(self._buf)
        self._thread = threading.Thread(target=self._main, name=f"packet-{spec.flow}", daemon=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        self._done_cb = lambda: loop.call_soon_threadsafe(finished)
        self._thread.start()
        await done
        if self._error is not None:
            raise RuntimeError(f"flow {self.spec.flow}: {self._error}")

    async def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        self.sock.close()
        text = f"flow {self.spec.flow}: sent {self.sent} packets"
        if self.echo_sent:
            text += f", {self.replies} of {self.echo_sent} echo requests answered"
        if self.errors:
            text += "; " + ", ".join(f"{v} {k}" for k, v in sorted(self.errors.items()))
        self.ctx.rec.log(text, TAG)

    def _main(self) -> None:
        try:
            self.sock.setblocking(False)
            self._send_all()
            if self.echo_sent and not self._stop.is_set():
                self._await_replies()
        except BaseException as e:
            self._error = e
        finally:
            self._done_cb()

    def _late_bound_ns(self) -> int:
        if not self.max_rtt_ns:
            return int(LATE_UNKNOWN_S * 1e9)
        return int(min(max(4 * self.max_rtt_ns, LATE_MIN_S * 1e9), LATE_MAX_S * 1e9))

    def _await_replies(self) -> None:
        end = time.monotonic_ns() + self._late_bound_ns()
        while self.replies < self.echo_sent and not self._stop.is_set():
            left = end - time.monotonic_ns()
            if left <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], min(left / 1e9, POLL_SECONDS))
            if ready:
                self._drain(end)

    def _send_all(self) -> None:
        hyb = timer.HybridTimer()
        hyb.setup()
        spec, key, clock, cols = self.spec, self.key, self.clock, self.cols
        s, sockaddr, stop = self.sock, self.sockaddr, self._stop
        mono = time.monotonic_ns
        tag_at = FIXED_LEN + len(spec.flow)
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
        start = mono() + START_DELAY_NS
        ring_seq, ring_t, ring_replied = self._ring_seq, self._ring_t, self._ring_replied
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
            # Wait for the deadline, handling replies meanwhile.
            while True:
                now = mono()
                ahead = deadline - now
                if ahead <= 0:
                    break
                if ahead > hyb.spin_ns:
                    target = deadline - hyb.spin_ns
                    timeout = (target - now) / 1e9
                    ready, _, _ = select.select([s], [], [], min(timeout, POLL_SECONDS))
                    if stop.is_set():
                        return
                    if ready:
                        self._drain(target)
                    elif timeout <= POLL_SECONDS:
                        hyb.learn(mono() - target)
                    continue
                # Spin; take a reply only while there is time to spare.
                if ahead > DRAIN_SLACK_NS:
                    self._drain(deadline - DRAIN_SLACK_NS, once=True)
            now = mono()
            t = clock.from_mono(now)
            # The reply may be handled before sendto returns: note the send first.
            slot = seq % RING
            ring_t[slot] = t
            ring_seq[slot] = seq
            ring_replied[slot] = 0
            try:
                s.sendto(buf, sockaddr)
            except BlockingIOError:
                ring_seq[slot] = -1
                self.errors["send errors (socket buffer full)"] += 1
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

    def _drain(self, until_ns: int, once: bool = False) -> None:
        """_drain handles the datagrams waiting on the socket, until none is left or until_ns."""
        s, key, clock, cols, flow = self.sock, self.key, self.clock, self.cols, self.spec.flow
        limit = self.spec.max_packet_size
        buf, view = self._buf, self._view
        ring_seq, ring_t, ring_replied = self._ring_seq, self._ring_t, self._ring_replied
        while True:
            try:
                n, anc, msg_flags, _ = s.recvmsg_into([buf], psock.ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors["receive errors"] += 1
                return
            t = clock.from_wall(psock.rx_time_ns(anc))
            if n > limit or msg_flags & socket.MSG_TRUNC:
                self.errors["oversized packets dropped"] += 1
            else:
                try:
                    flag, seq, got_flow = parse(view[:n], key)
                except BadPacket as e:
                    self.errors[f"invalid packets dropped ({e.reason})"] += 1
                else:
                    if not flag & REPLY or got_flow != flow:
                        self.errors["unexpected packets dropped"] += 1
                    else:
                        cols.append(t, seq, n, flag, False, None)
                        slot = seq % RING
                        if ring_seq[slot] == seq and not ring_replied[slot]:
                            ring_replied[slot] = 1
                            self.replies += 1
                            rtt = t - ring_t[slot]
                            if rtt > self.max_rtt_ns:
                                self.max_rtt_ns = rtt
            if once or time.monotonic_ns() >= until_ns:
                return
